"""Phones of speech on the 25 fps timeline, from pocketsphinx 5's CMU en-US acoustic model and phone language model
(both inside the pocketsphinx wheel: nothing is downloaded). The front end of ``e_aud_phones.PhoneAudioEncoder``.

    samples (640 T,) 16 kHz  ->  pocketsphinx allphone decoding  ->  [(phone, start, end)] at 100 Hz
                             ->  PhoneRecogniser.frames  ->  (T, P) float32: per video frame, the fraction of it
                                                               that each of the P phones covers (rows sum to 1)

``PHONES``: the 39 ARPAbet phones of the CMU dictionary and SIL; pocketsphinx's filler and noise symbols (+NSN+,
+SPN+, ...) count as SIL. Decoding runs at about 20x real time on one core; ``FeatureCache`` keeps the frames of
a waveform on disk under the sha1 of its samples, so training computes each segment's phones once.

Measured on the synthetic corpus' formant speech (its phoneme timings are known): 40% of the speech frames get the
right phone; on LJ Speech's "Printing, in the only sense..." it hears R IH UW T EY NG.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from src.media.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

PHONES = ("SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
          "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y",
          "Z", "ZH")
INDEX = {p: i for i, p in enumerate(PHONES)}
HZ = 100  # pocketsphinx frames per second


def phone_frames(segments: list[tuple[str, float, float]], n_frames: int) -> np.ndarray:
    """[(phone, start_s, end_s)] -> (n_frames, P) coverage of each 25 fps frame by each phone; frames no segment
    covers are SIL."""
    out = np.zeros((n_frames, len(PHONES)), np.float32)
    edges = np.arange(n_frames + 1) / FPS  # frame k covers [k / 25, (k + 1) / 25)
    for phone, start, end in segments:
        first, last = int(np.floor(start * FPS)), int(np.ceil(end * FPS))
        for k in range(max(first, 0), min(last, n_frames)):
            overlap = min(end, edges[k + 1]) - max(start, edges[k])
            if overlap > 0:
                out[k, INDEX.get(phone, 0)] += overlap * FPS
    out[:, 0] += np.clip(1.0 - out.sum(1), 0.0, None)  # the uncovered rest of a frame: silence
    return out / out.sum(1, keepdims=True)


class PhoneRecogniser:
    """pocketsphinx in allphone mode (the phone n-gram model, no words). ``lw``: language weight; the beams are
    wide so no phone path is pruned early (it is fast anyway). Frames quieter than ``floor_db`` (RMS, dBFS) are
    silence whatever the decoder says: on digital silence it hears an endless S."""

    def __init__(self, lw: float = 2.0, beam: float = 1e-20, pbeam: float = 1e-20, floor_db: float = -55.0) -> None:
        try:
            from pocketsphinx import Config, Decoder, get_model_path
        except ImportError as err:
            raise ModuleNotFoundError("the phone front end needs pocketsphinx 5 (its wheel ships the CMU en-US "
                                      "models): pip install 'pocketsphinx>=5,<6'") from err
        models = Path(get_model_path()) / "en-us"
        for name in ("en-us", "en-us-phone.lm.bin"):
            if not (models / name).exists():
                raise FileNotFoundError(f"pocketsphinx's model file {models / name} is missing (a broken install?)")
        self.settings = {"lw": lw, "beam": beam, "pbeam": pbeam, "floor_db": floor_db}
        self._config = dict(hmm=str(models / "en-us"), allphone=str(models / "en-us-phone.lm.bin"), lw=lw,
                            beam=beam, pbeam=pbeam, loglevel="FATAL")
        self._decoder = Decoder(Config(**self._config))

    @property
    def n_phones(self) -> int:
        return len(PHONES)

    def segments(self, samples: np.ndarray) -> list[tuple[str, float, float]]:
        """(N,) float in [-1, 1] at 16 kHz -> [(phone, start_s, end_s)], fillers as SIL."""
        pcm = (np.clip(np.asarray(samples, np.float32), -1.0, 1.0) * 32767).astype(np.int16)
        if len(pcm) < SAMPLE_RATE // HZ * 3:  # under 30 ms: nothing to decode
            return []
        self._decoder.start_utt()
        self._decoder.process_raw(pcm.tobytes(), full_utt=True)
        self._decoder.end_utt()
        return [(s.word if s.word in INDEX else "SIL", s.start_frame / HZ, (s.end_frame + 1) / HZ)
                for s in self._decoder.seg()]

    def frames(self, samples: np.ndarray, n_frames: int | None = None) -> np.ndarray:
        """(640 T,) samples -> (T, P) phone coverage per 25 fps frame (``phone_frames``)."""
        n_frames = len(samples) // SAMPLES_PER_FRAME if n_frames is None else n_frames
        out = phone_frames(self.segments(samples), n_frames)
        frames = np.zeros(n_frames * SAMPLES_PER_FRAME, np.float32)
        used = min(len(frames), len(samples))
        frames[:used] = samples[:used]
        rms = np.sqrt(np.mean(frames.reshape(n_frames, SAMPLES_PER_FRAME).astype(np.float64) ** 2, axis=1))
        quiet = 20 * np.log10(rms + 1e-12) < self.settings["floor_db"]  # (T,)
        out[quiet] = 0.0
        out[quiet, 0] = 1.0
        return out

    def __getstate__(self) -> dict:  # a data worker gets its own decoder
        return {"settings": self.settings}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state["settings"])


class FeatureCache:
    """``extractor.frames(samples, n_frames)`` kept on disk under ``cache_dir/<sha1 of the samples and settings>.npy``
    (written to a temporary name and renamed). ``cache_dir`` None: $PERSONATALK_CACHE/phones, else
    ~/.cache/personatalk/phones."""

    def __init__(self, extractor: PhoneRecogniser, cache_dir: str | Path | None = None) -> None:
        self.extractor = extractor
        if cache_dir is None:
            base = os.environ.get("PERSONATALK_CACHE") or Path(os.environ.get("XDG_CACHE_HOME",
                                                                             Path.home() / ".cache")) / "personatalk"
            cache_dir = Path(base) / "phones"
        self.cache_dir = Path(cache_dir)

    def frames(self, samples: np.ndarray, n_frames: int) -> np.ndarray:
        digest = hashlib.sha1(np.ascontiguousarray(samples, np.float32).tobytes())
        digest.update(repr((n_frames, sorted(self.extractor.settings.items()))).encode())
        path = self.cache_dir / f"{digest.hexdigest()}.npy"
        if path.is_file():
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError):  # a damaged entry: computed again below
                pass
        out = self.extractor.frames(samples, n_frames)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, out, allow_pickle=False)
        os.replace(tmp, path)
        return out
