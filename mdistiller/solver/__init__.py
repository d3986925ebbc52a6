"""How parameters are updated: the optimizer (:mod:`.optimizer`), the learning-rate
schedule (:mod:`.lr_schedule`) and DOT, the distillation-oriented optimizer (:mod:`.dot`)."""
