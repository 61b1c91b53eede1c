"""amigo-burst: fine-tune a code LLM in five stages, on the laptop where it fits, on rented GPUs where it doesn't."""

__version__ = "0.1.0"
