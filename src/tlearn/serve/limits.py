"""What one server takes on at once, in one frozen value: checked once, shown at /model, enforced by `work.py`.

Memory is what the limits bound, beyond the model and its runtime:
  decoding  Pillow holds the whole image while it converts and shrinks it: measured at 7.5 bytes per
            pixel for an RGB PNG, 23 for RGBA, 27 for a 16-bit PNG and 31 for a float TIFF, so a 50 MP
            image takes 0.4 to 1.5 GB while it decodes. A JPEG is decoded at a reduced scale (a few MB).
            Large images (over LARGE_DECODE_PIXELS, JPEGs counted at a sixteenth) decode at most
            `large_threads` at once, and small images on `threads` threads of their own: at most
            large_threads x 1.5 GB + threads x 0.13 GB.
  queue     decoded images waiting for the network: at most `max_queue`, 0.6 MB each at 224 px (38 MB
            with the default), plus one pass of at most 32 images on the network's thread.
  uploads   the bodies of the requests in progress are held until each is answered: at most
            `max_upload_mb` of them at once (one request is always taken, up to its own limit of
            `max_batch` files of `max_mb`); JSON needs up to 1.75 times more while it is parsed.
With the defaults on two cores: 1 x 1.5 + 2 x 0.13 = 1.8 GB for decoding at worst (0.65 GB when the
large images are RGB), and 256 MB of uploads. These hold because the server has glibc give freed
image memory back after each decode of over 1 MP (`memory.py`); without it decodes in a row pile up.
Measured by benchmarks/serve_load.py: a 0.78 GB server peaked at 2.2 GB under eight clients sending 49 MP
PNGs (2.1 GB when a fixed mapping threshold gave memory back, at a third of PyTorch's speed).
"""

from __future__ import annotations

from dataclasses import dataclass

from tlearn.core.errors import ConfigError
from tlearn.core.threads import cpu_workers

# A server decodes what strangers send: 50 MP is a 48 MP phone photo with room to spare; a 100 MP
# PNG bomb (300 MB or more once decoded) is refused from its header.
SERVER_MAX_PIXELS = 50_000_000

# Sixteen 12 MP phone photos fit one request; sixteen 49 MP PNGs (785 MP, 7 to 15 s of decoding here) do not.
SERVER_MAX_BATCH_PIXELS = 200_000_000

# One thread per core decodes small images: more would only queue inside Pillow. The network has a thread of its
# own (one forward pass at a time, over the images of every request waiting: see batching.py).
SERVER_THREADS = cpu_workers(2)

# A large image holds a core for a second or more and up to 1.5 GB (see above): one at a time by default,
# on a thread of its own, so small requests are still answered while it decodes.
SERVER_LARGE_THREADS = 1

# Over this many pixels an image is large. A JPEG counts for a sixteenth: it is decoded at 1/2 to 1/8 scale.
LARGE_DECODE_PIXELS = 4_000_000
JPEG_SHARE = 16

KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive)
SHUTDOWN_SECONDS = 5  # Ctrl-C waits at most this long for the requests in progress


@dataclass(frozen=True)
class Limits:
    """The limits of one server; each names the `tlearn serve` flag that sets it.

    max_mb            largest image file (--max-mb)
    max_batch         most images in one /predict/batch request (--max-batch)
    max_pixels        largest image decoded, width x height read from its header
    max_batch_pixels  most pixels in one request, summed over its images (--max-batch-mp, in megapixels)
    threads           small images decoding at once (--threads); the network runs one pass at a time
                      on a thread of its own
    large_threads     large images decoding at once, on threads of their own (--large-threads)
    max_pending       requests in progress at once; one more is answered 503 with Retry-After (--max-pending)
    max_upload_mb     MB of request bodies held at once; a request that would pass it waits its turn as a
                      503 with Retry-After, unless it is the only one (--max-upload-mb)
    max_queue         decoded images waiting for the network; a request whose images would pass it is
                      answered 503 with Retry-After, unless the queue is empty (--max-queue)
    timeout           seconds from a request's admission to its answer: 408 while its body is still
                      arriving, 504 after (--timeout)
    """

    max_mb: float = 10
    max_batch: int = 16
    max_pixels: int = SERVER_MAX_PIXELS
    max_batch_pixels: int = SERVER_MAX_BATCH_PIXELS
    threads: int = SERVER_THREADS
    large_threads: int = SERVER_LARGE_THREADS
    max_pending: int = 16
    max_upload_mb: float = 256
    max_queue: int = 64  # a 64th image waits for the 63 before it (1.3 s of the demo MobileNetV2 in PyTorch here)
    timeout: float = 30

    def __post_init__(self) -> None:
        problems = []
        if not self.max_mb > 0:
            problems.append(f"--max-mb must be more than 0. Got {self.max_mb:g}.")
        for flag, count in (
            ("--max-batch", self.max_batch),
            ("--threads", self.threads),
            ("--large-threads", self.large_threads),
            ("--max-pending", self.max_pending),
            ("--max-queue", self.max_queue),
        ):
            if count < 1:
                problems.append(f"{flag} must be 1 or more. Got {count}.")
        if not self.max_upload_mb > 0:
            problems.append(f"--max-upload-mb must be more than 0. Got {self.max_upload_mb:g}.")
        if not self.timeout > 0:
            problems.append(f"--timeout must be more than 0 seconds. Got {self.timeout:g}.")
        if self.max_pixels < 1:
            problems.append(f"max_pixels must be 1 or more. Got {self.max_pixels}.")
        elif self.max_batch_pixels < self.max_pixels:
            problems.append(
                f"--max-batch-mp must be at least the per-image limit ({self.max_pixels / 1e6:g} MP), or no "
                f"image that large could be sent. Got {self.max_batch_pixels / 1e6:g}."
            )
        if problems:
            raise ConfigError(" ".join(problems))

    @property
    def file_limit(self) -> int:
        """Bytes of one image file."""
        return int(self.max_mb * 1024 * 1024)

    @property
    def upload_limit(self) -> int:
        """Bytes of request bodies held at once."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def connection_limit(self) -> int:
        """Connections past which uvicorn itself answers 503, before the app sees the request: a backstop
        for floods of idle connections; the app's own limit, `max_pending`, answers first."""
        return max(64, 4 * self.max_pending)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "max_mb": self.max_mb,
            "max_batch": self.max_batch,
            "max_megapixels": self.max_pixels / 1e6,
            "max_batch_megapixels": self.max_batch_pixels / 1e6,
            "threads": self.threads,
            "large_threads": self.large_threads,
            "max_pending": self.max_pending,
            "max_upload_mb": self.max_upload_mb,
            "max_queue": self.max_queue,
            "timeout_seconds": float(self.timeout),
        }
