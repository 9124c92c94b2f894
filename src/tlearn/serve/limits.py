"""What one server takes on at once, in one frozen value: checked once, shown at /model, enforced by `work.py`.

Memory is what the limits bound. Decoding is the costly part: Pillow holds the full image while it is
converted and shrunk, measured at 7.5 bytes per pixel for an RGB PNG, 23 for RGBA and 27 for a 16-bit
PNG, so a 49 MP image takes 0.4 to 1.3 GB while it decodes (a JPEG, decoded at a reduced scale, a few MB).
At most `threads` images decode at once, whatever the number of requests, so decoding adds at most
`threads` times that. The bytes of each request in progress are held until it is answered: at most
`max_pending` bodies of up to `max_batch` files of `max_mb`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlearn.core.errors import ConfigError
from tlearn.core.threads import cpu_workers

# A server decodes what strangers send: 50 MP is a 48 MP phone photo with room to spare, and a
# sixth of what a 100 MP PNG bomb would allocate (300 MB) per request.
SERVER_MAX_PIXELS = 50_000_000

# Sixteen 12 MP phone photos fit one request; sixteen 49 MP PNGs (785 MP, 16 s of decoding here) do not.
SERVER_MAX_BATCH_PIXELS = 200_000_000

# One thread per core decodes and runs the network: more would only queue inside Pillow and torch,
# and each image decoding at once can take a gigabyte (see above).
SERVER_THREADS = cpu_workers(2)

KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive)
SHUTDOWN_SECONDS = 5  # Ctrl-C waits at most this long for the requests in progress


@dataclass(frozen=True)
class Limits:
    """The limits of one server; each names the `tlearn serve` flag that sets it.

    max_mb            largest image file (--max-mb)
    max_batch         most images in one /predict/batch request (--max-batch)
    max_pixels        largest image decoded, width x height read from its header
    max_batch_pixels  most pixels in one request, summed over its images (--max-batch-mp, in megapixels)
    threads           images decoding, or batches in the network, at once (--threads)
    max_pending       requests in progress at once; one more is answered 503 with Retry-After (--max-pending)
    timeout           seconds from a request's admission to its answer: 408 while its body is still
                      arriving, 504 after (--timeout)
    """

    max_mb: float = 10
    max_batch: int = 16
    max_pixels: int = SERVER_MAX_PIXELS
    max_batch_pixels: int = SERVER_MAX_BATCH_PIXELS
    threads: int = SERVER_THREADS
    max_pending: int = 16
    timeout: float = 30

    def __post_init__(self) -> None:
        problems = []
        if not self.max_mb > 0:
            problems.append(f"--max-mb must be more than 0. Got {self.max_mb:g}.")
        for flag, value in (("--max-batch", self.max_batch), ("--threads", self.threads)):
            if value < 1:
                problems.append(f"{flag} must be 1 or more. Got {value}.")
        if self.max_pending < 1:
            problems.append(f"--max-pending must be 1 or more. Got {self.max_pending}.")
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
            "max_pending": self.max_pending,
            "timeout_seconds": float(self.timeout),
        }
