"""llm_lib: the reference implementation of "LLMs from the Ground Up", one module per concept.

Modules mirror the chapters: data (the course assets) and curation (01), tokenizer (02), embeddings (03),
attention (04), model (05), losses (06), optim/train (07), sampling (08), sft/lora (09), reward/ppo (10),
dpo (11), grpo (12), evaluation (13), quantize (14); a chapter's widgets live in `<module>_viz`.
`pipeline` trains and caches the course artifacts; `display` renders code, tokens and figures in the book.
"""
__version__ = "0.1.0"
