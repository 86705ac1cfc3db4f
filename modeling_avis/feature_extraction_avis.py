"""The audio part of the AVIS processor: VGGish's log-mel examples, one per sampled frame.

The original (`avism/data/datasets/extract_audio_feat/vggish_input.py::wavfile_to_examples`) cuts the 44.1 kHz WAV
into one-second pieces, piece k = seconds [k, k + 1) for JPEG frame k, averages each to mono, resamples it to 16 kHz
with resampy and keeps the first 96-frame log-mel example of the piece; a piece too short for one example (under
0.975 s) gives an all-zero example. Here the whole track is resampled once (PyAV, at decoding) and each frame takes
the one-second window that starts at its timestamp, with the same rule for windows the track does not cover (the
seconds after it ends).

Silence is the log-mel of a silent waveform (`silence`): what a video without sound, or with its sound muted, gives
every frame.
"""

import math

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin

from .config_ranges import FEATURE_EXTRACTOR_RANGES, check_ranges
from .errors import AvisInputError

# Values of the (windows x frames x FFT bins) float64 spectrum, or of the windows' samples, computed at once: 256
# windows at VGGish's settings, ~200 MB in all.
SPECTRUM_VALUES_PER_BATCH = 256 * 96 * 257


class AvisFeatureExtractor(FeatureExtractionMixin):
    r"""
    VGGish log-mel examples (`vggish_params.py` of the original) at given times of a mono waveform.

    sampling_rate (`int`): rate the waveform must have (Hz).
    num_mel_bins (`int`): mel bands.
    num_frames (`int`): log-mel frames per example (96 x 10 ms).
    window_seconds, hop_seconds (`float`): STFT window (periodic Hann) and hop.
    min_frequency, max_frequency (`float`): edges of the mel filter bank (Hz, HTK mel scale).
    log_offset (`float`): added to the mel magnitudes before the log.

    Each setting has a range (`config_ranges.FEATURE_EXTRACTOR_RANGES`); a value outside it is a ValueError.
    """

    model_input_names = ["audio_log_mel"]

    def __init__(
        self,
        sampling_rate: int = 16000,
        num_mel_bins: int = 64,
        num_frames: int = 96,
        window_seconds: float = 0.025,
        hop_seconds: float = 0.010,
        min_frequency: float = 125.0,
        max_frequency: float = 7500.0,
        log_offset: float = 0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sampling_rate = sampling_rate
        self.num_mel_bins = num_mel_bins
        self.num_frames = num_frames
        self.window_seconds = window_seconds
        self.hop_seconds = hop_seconds
        self.min_frequency = min_frequency
        self.max_frequency = max_frequency
        self.log_offset = log_offset
        check_ranges(self, FEATURE_EXTRACTOR_RANGES)
        if not min_frequency < max_frequency <= sampling_rate / 2:
            raise ValueError(
                f"the mel bands span {min_frequency:g}..{max_frequency:g} Hz: it must be a range within 0.."
                f"{sampling_rate / 2:g} Hz, half the sampling rate"
            )

    @property
    def window_length(self) -> int:
        return round(self.sampling_rate * self.window_seconds)

    @property
    def hop_length(self) -> int:
        return round(self.sampling_rate * self.hop_seconds)

    @property
    def example_length(self) -> int:
        """Samples one example needs: 15600 (0.975 s) with VGGish's settings."""
        return self.window_length + (self.num_frames - 1) * self.hop_length

    @property
    def fft_length(self) -> int:
        """The STFT frames' padded length: the next power of two (512 at 16 kHz)."""
        return 2 ** math.ceil(math.log2(self.window_length))

    @property
    def windows_per_batch(self) -> int:
        """Windows turned into log-mel at once, for SPECTRUM_VALUES_PER_BATCH values (256 with VGGish's settings)."""
        values = max(self.num_frames * (self.fft_length // 2 + 1), self.example_length)
        return max(1, SPECTRUM_VALUES_PER_BATCH // values)

    def __call__(
        self,
        waveform: np.ndarray,
        timestamps: list[float] | np.ndarray,
        sampling_rate: int,
        start: float = 0.0,
        first_sample: int = 0,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """`audio_log_mel` (T, num_frames, num_mel_bins) float32: the example of the window starting at each timestamp.

        waveform: (N,) mono samples: `waveform[i]` is sample `first_sample + i` of a track whose sample 0 plays at
        `start` seconds (the timestamps' clock). A window whose first `example_length` samples the waveform does not
        hold gets the all-zero example.
        """
        if sampling_rate != self.sampling_rate:
            raise AvisInputError(f"the audio must be sampled at {self.sampling_rate} Hz, not {sampling_rate} Hz")
        waveform = torch.as_tensor(np.asarray(waveform), dtype=torch.float64)
        offsets = self.window_offsets(timestamps, start, first_sample)
        covered = self.covered(offsets, len(waveform))
        examples = torch.zeros(len(offsets), self.num_frames, self.num_mel_bins)
        indices = covered.nonzero().flatten()
        batch_size = self.windows_per_batch
        for first in range(0, len(indices), batch_size):
            batch = indices[first : first + batch_size]
            windows = waveform[offsets[batch, None] + torch.arange(self.example_length)]
            examples[batch] = self.log_mel(windows).float()
        return BatchFeature({"audio_log_mel": examples}, tensor_type=return_tensors)

    def window_offsets(
        self, timestamps: list[float] | np.ndarray, start: float = 0.0, first_sample: int = 0
    ) -> torch.Tensor:
        """(T,) int64: where each timestamp's window starts in a waveform that begins with sample `first_sample` of
        a track starting at `start` seconds."""
        times = torch.as_tensor(timestamps, dtype=torch.float64)
        return torch.round((times - start) * self.sampling_rate).long() - first_sample

    def covered(self, offsets: torch.Tensor, num_samples: int) -> torch.Tensor:
        """(T,) bool: whether a waveform of `num_samples` holds the whole example of each window."""
        return (offsets >= 0) & (offsets + self.example_length <= num_samples)

    def silence(self, num_frames: int) -> torch.Tensor:
        """(num_frames, num_frames_per_example, num_mel_bins) float32: the log-mel examples of a silent waveform,
        log(log_offset) everywhere."""
        return torch.full((num_frames, self.num_frames, self.num_mel_bins), math.log(self.log_offset))

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """(..., samples) -> (..., frames, num_mel_bins): log(|STFT| @ mel filters + log_offset), as `mel_features.py`.

        The STFT frames the signal without padding (frames = 1 + (samples - window) // hop), applies a periodic
        Hann window and zero-pads each frame at its end to the next power of two (512 at 16 kHz).
        """
        frames = waveform.unfold(-1, self.window_length, self.hop_length)
        window = torch.hann_window(self.window_length, periodic=True, dtype=waveform.dtype)
        magnitudes = torch.fft.rfft(frames * window, n=self.fft_length).abs()
        mel = magnitudes @ self.mel_filters(self.fft_length // 2 + 1).to(waveform.dtype)
        return torch.log(mel + self.log_offset)

    def mel_filters(self, num_spectrogram_bins: int) -> torch.Tensor:
        """(num_spectrogram_bins, num_mel_bins) triangular filters, linear in HTK mel, with no weight on the DC bin."""
        bin_mels = _hertz_to_mel(
            torch.linspace(0.0, self.sampling_rate / 2, num_spectrogram_bins, dtype=torch.float64)
        )
        edges = torch.linspace(
            _hertz_to_mel(torch.tensor(self.min_frequency, dtype=torch.float64)),
            _hertz_to_mel(torch.tensor(self.max_frequency, dtype=torch.float64)),
            self.num_mel_bins + 2,
            dtype=torch.float64,
        )
        lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
        rising = (bin_mels[:, None] - lower) / (center - lower)
        falling = (upper - bin_mels[:, None]) / (upper - center)
        filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
        filters[0] = 0.0
        return filters


def _hertz_to_mel(frequencies: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(frequencies / 700.0)


__all__ = ["AvisFeatureExtractor"]
