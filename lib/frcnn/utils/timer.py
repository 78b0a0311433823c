"""A tic/toc timer (py-faster-rcnn's utils.timer.Timer), CUDA-aware."""
import time


class Timer:
    """Accumulates wall time over tic/toc pairs.

    sync: a callable run before reading the clock (e.g. torch.cuda.synchronize), so that
    asynchronous GPU work is counted where it was launched.
    """

    def __init__(self, sync=None):
        self.sync = sync
        self.total_time = 0.0
        self.calls = 0
        self.start_time = 0.0
        self.diff = 0.0
        self.average_time = 0.0
        self.times = []

    def tic(self):
        if self.sync is not None:
            self.sync()
        self.start_time = time.perf_counter()

    def toc(self, average=True):
        if self.sync is not None:
            self.sync()
        self.diff = time.perf_counter() - self.start_time
        self.total_time += self.diff
        self.calls += 1
        self.times.append(self.diff)
        self.average_time = self.total_time / self.calls
        return self.average_time if average else self.diff

    def median(self, skip=0):
        """Median of the recorded times after the first `skip` calls (warm-up)."""
        t = sorted(self.times[skip:])
        if not t:
            return 0.0
        n = len(t)
        return t[n // 2] if n % 2 else 0.5 * (t[n // 2 - 1] + t[n // 2])

    def reset(self):
        self.__init__(self.sync)
