"""llm_lib: the reference implementation of "LLMs from the Ground Up", one module per concept.

Modules mirror the chapters: data (01: the course assets today; curation to come), tokenizer (02),
embeddings (03), attention (04, with attention_viz), model (05), losses (06, with losses_viz),
optim/train (07), sampling (08). Planned with their chapters: sft/lora (09), reward/ppo (10), dpo (11),
grpo (12), evaluation (13), quantize (14). `pipeline` trains and caches the course artifacts;
`display` renders code, tokens and widgets in the book.
"""
__version__ = "0.1.0"
