"""Course support, kept apart from the model: the corpus and tokenizer, the toy tasks, the cached toy models, the
pictures and explorers, the grader. The model itself is the package one level up."""
