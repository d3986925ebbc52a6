"""What a run leaves on disk: the run folder with its lock and atomic epoch commit
(:mod:`.folder`), checkpoints (:mod:`.checkpoint`), and metrics and loggers (:mod:`.loggers`)."""
