"""The application: training runs and their files, resume, and the commands that use a model.

    app.config        presets, the model and optimizer flags, building both (train.py and bench share it)
    app.train_command the trainer's command line (python train.py, mytorch-train)
    app.trainer       Run: one training run (model, optimizer, schedule, data, experiment directory)
    app.resume        state.npz: what a run saves, and continuing a run from it (the data's fingerprint)
    app.rundir        where a run writes, and DIR/.lock: one training process per run directory
    app.step          one training step, timed by phase when the model has a timer
    app.progress      tqdm bars on a terminal, log lines elsewhere, and the curves plot
    app.evaluate      fixture NLL and whole-split perplexity (python -m app.evaluate, mytorch-evaluate)
    app.predict       next words and a continuation of a prompt (python -m app.predict, mytorch-predict)
    app.generate      continuations of a prompt or a fixtures file (python -m app.generate, mytorch-generate)
    app.export        publish a model file with its predictions and card (python -m app.export)
    app.decode_report decoding strategies measured side by side (python -m app.decode_report)
    app.errors        UsageError and every command's parser and entry: one line on stderr, exit code 2

It uses models/ (the language models and their files), dataset/ and mytorch/; nothing there
imports it.
"""
import mytorch  # noqa: F401, E402  (first: it tunes OpenBLAS before NumPy loads it)
