"""The application: training runs and their files, resume, and the commands that use a model.

    app.config        presets, the model and optimizer flags, building both (train.py and bench share it)
    app.trainer       Run: one training run (model, optimizer, schedule, data, experiment directory)
    app.resume        state.npz: what a run saves, and continuing a run from it
    app.step          one training step, timed by phase when the model has a timer
    app.progress      the progress bar and the curves plot
    app.evaluate      fixture NLL and whole-split perplexity (python -m app.evaluate)
    app.predict       next words and a continuation of a prompt (python -m app.predict)
    app.export        publish a model file with its predictions and card (python -m app.export)
    app.decode_report decoding strategies measured side by side (python -m app.decode_report)
    app.errors        UsageError: a user's mistake, one line on stderr, exit code 2

It uses models/ (the language models and their files), dataset/ and mytorch/; nothing there
imports it.
"""
import mytorch  # noqa: F401, E402  (first: it tunes OpenBLAS before NumPy loads it)
