"""Training curves as a PNG: losses, learning rate and validation metrics per set.

:class:`TrainingCurves` collects what the training loop logs and draws it with a matplotlib
``Figure`` on the Agg canvas (no pyplot, no global state), written atomically, so the file beside
the log is always a complete picture of the run so far. Its :meth:`~TrainingCurves.state_dict`
travels in the training states, so a resumed run's picture starts at iteration 1.
"""
import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .checkpoint import atomic_write

__all__ = ['TrainingCurves']


class TrainingCurves:
    """``train``: ``{name: [(iter, value), ...]}`` of losses (and ``lr``); ``val``:
    ``{set: {metric: [(iter, value), ...]}}``."""

    def __init__(self):
        self.train, self.val = {}, {}

    def add_train(self, current_iter, values):
        for name, value in values.items():
            self.train.setdefault(name, []).append((current_iter, float(value)))

    def add_val(self, current_iter, set_name, metrics):
        for metric, value in metrics.items():
            self.val.setdefault(set_name, {}).setdefault(metric, []).append((current_iter, float(value)))

    def state_dict(self):
        return {'train': self.train, 'val': self.val}

    def load_state_dict(self, state):
        self.train, self.val = dict(state.get('train', {})), dict(state.get('val', {}))

    def figure(self, title=''):
        """A figure with one panel for the losses (log scale), one for the learning rate and one
        per validation metric (a line per set)."""
        metrics = sorted({m for per_set in self.val.values() for m in per_set})
        panels = ['losses', 'lr', *metrics]
        fig = Figure(figsize=(5 * len(panels), 4), dpi=80)
        FigureCanvasAgg(fig)
        for i, panel in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            if panel == 'losses':
                series = {k: v for k, v in self.train.items() if k.startswith('l_')}
                ax.set_yscale('log' if all(y > 0 for s in series.values() for _, y in s) and series else 'linear')
            elif panel == 'lr':
                series = {'lr': self.train.get('lr', [])}
            else:
                series = {name: per_set[panel] for name, per_set in self.val.items() if panel in per_set}
            for name, points in series.items():
                if points:
                    ax.plot(*zip(*points), label=name, marker='o' if panel in metrics else None, markersize=3)
            ax.set_title(f'validation {panel}' if panel in metrics else panel)
            ax.set_xlabel('iteration')
            ax.grid(True, alpha=0.3)
            if any(series.values()):
                ax.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        return fig

    def save(self, path, title=''):
        """Write the figure to ``path`` (PNG) atomically."""
        buffer = io.BytesIO()
        self.figure(title).savefig(buffer, format='png')
        return atomic_write(path, lambda f: f.write(buffer.getvalue()))
