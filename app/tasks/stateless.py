"""The part of the task interface (app.tasks) that a task without state of its own shares: nothing
beyond the model and the optimizer crosses a batch or an epoch (the ViT's images, the translator's
sentence pairs; unlike the language model's carried LSTM state), and the step is app.step's on
self.stepper (the model, or its batch split over the cores: mytorch.fast.batch_split)."""
from ..step import ONE_PROCESS, batch_items, train_step


class StatelessTask:
    comm = ONE_PROCESS      # the trainer's communicator (mytorch.communicator): x, y are this rank's share

    @property
    def rows_per_batch(self):
        """Rows in every batch, which the ranks must share evenly (None: batches vary)."""
        return self.cfg["batch_size"]

    def extra_arrays(self):
        return {}

    def load_extra(self, arrays):
        pass

    def end_epoch(self):
        pass

    def train_step(self, opt, x, y, clip):
        return train_step(self.stepper, opt, x, y, clip, comm=self.comm, items=batch_items(self.model, x, y))
