"""How the embedded model is made: corpus synthesis, sentences, tokenizer training, training, averaging,
evaluation. Nothing at serving time imports it."""
