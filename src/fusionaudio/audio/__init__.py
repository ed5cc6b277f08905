"""The audio front end: decode, resample, kaldi fbank (the reference's, bit for bit on CPU).

``decode`` reads files and checks inputs, ``resample`` brings them to 16 kHz (``sinc`` is the
reference's resampler), ``kaldi`` holds the filterbank arithmetic and ``fbank`` the whole path from a
file or waveform to the model's normalised ``[1024, 128]`` features, one clip or a batch at a time.
"""

from fusionaudio.audio.decode import (AUDIO_SUFFIXES, AudioError, expand_audio_args,
                                      header_problem, read_audio)
from fusionaudio.audio.fbank import (CHANNEL_MODES, FBANK_NORM_MEAN, FBANK_NORM_STD, TARGET_FRAMES, AudioInfo,
                                     fbank_batch, kaldi_fbank, load_fbank, load_fbank_batch, prepare_waveform,
                                     waveform_to_fbank)
from fusionaudio.audio.kaldi import FRAME_SHIFT, NUM_MEL_BINS, TARGET_SAMPLE_RATE
from fusionaudio.audio.resample import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, RESAMPLERS, resample

__all__ = ["AUDIO_SUFFIXES", "AudioError", "AudioInfo", "CHANNEL_MODES", "FBANK_NORM_MEAN", "FBANK_NORM_STD",
           "FRAME_SHIFT", "MAX_SAMPLE_RATE", "MIN_SAMPLE_RATE", "NUM_MEL_BINS", "RESAMPLERS", "TARGET_FRAMES",
           "TARGET_SAMPLE_RATE", "expand_audio_args", "fbank_batch", "header_problem",
           "kaldi_fbank", "load_fbank", "load_fbank_batch", "prepare_waveform", "read_audio", "resample",
           "waveform_to_fbank"]
