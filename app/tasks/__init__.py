"""The tasks the one trainer (app.trainer.Run) trains, each behind the same small interface.

    cfg["task"]   model                         data                          best epoch by
    "lm"          LanguageModel, TransformerLM  WikiText-2 (HW4P1 layout)     validation NLL, lower
    "vit"         ViT                           Fashion-MNIST (IDX files)     validation accuracy, higher
    "translate"   Translator                    Ding de-en pairs, or a TSV    validation BLEU, higher

Runs saved before tasks existed have no cfg["task"]: they are "lm".

A task object holds its model, its training batches and its data, and says what the loop cannot
know (app.trainer.Run does everything else: the optimizer, the schedule, resume, the lock,
progress, metrics.jsonl, curves, signals, errors):

    model                 the model (train()/eval(), drops: its dropout layers, save(path, meta))
    loader                set_epoch(e), batches(start) -> (x, y) of epoch e from batch `start`, len()
    items_per_batch, unit the progress line's throughput: items a batch, and their name ("tok", "img")
    rows_per_batch, comm  the rows every batch holds (None: they vary), which N ranks must share evenly;
                          the trainer's communicator (mytorch.communicator), set by the trainer
    metric, higher_is_better, metric_name   the evaluation key that picks best.npz, and its words
    fingerprint()         the training data's identity (--resume refuses other data)
    meta()                what best.npz and state.npz record about the data ({"vocab_size": V}, ...)
    check_meta(meta, path)    CheckpointError when a saved run's data does not fit
    train_step(opt, x, y, clip) -> (loss, gradient norm): one step, the optimizer's included
    evaluate(epoch, say)  -> {name: value} (may include "samples": text for the log; the trainer
                          times it); called on every rank: each does its share (comm.rows) and the
                          sums go through comm (only rank 0's return is used); rank 0 writes the
                          task's per-epoch files into the run directory, say(line) reports a failed
                          write; leaves the model in training mode
    epoch_scores(row)     the evaluation's part of an epoch's log line
    save_best(path, row)  best.npz: the model with what the task records of the epoch
    format_metric(value)  the best metric as the last line prints it
    curves                what curves.png plots: app.progress.plot_curves's keywords (left, ylabel, ...)
    describe(batches, n_params)   one line: the model, its size and the batches
    extra_arrays(), load_extra(arrays)    task state beyond the model (the LM's carried state)
    end_epoch()           forget what does not cross an epoch boundary
"""
from ..errors import UsageError

TASKS = ("lm", "vit", "translate")


def task_name(cfg):
    """cfg's task: "lm" for runs saved before tasks existed."""
    name = cfg.get("task", "lm")
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    return name


def module(cfg_or_name):
    """The module of a task (app.tasks.language, .vision or .translate): its presets, flags and Task class."""
    name = cfg_or_name if isinstance(cfg_or_name, str) else task_name(cfg_or_name)
    if name == "translate":
        from . import translate
        return translate
    if name == "vit":
        from . import vision
        return vision
    from . import language
    return language
