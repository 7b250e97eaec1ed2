"""Audio of any length: no full-length copies of the features, and file-backed buffers once they are large.

Each test compares the new path with the code it replaced, written here as the oracle: the list + cat
encoder, the mirror padding built with ``torch.cat``, the fingerprint of one contiguous copy. Equality is
exact (``torch.equal`` / same digest): the change moves bytes, it must not change one.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import os

import numpy as np
import pytest
import torch

from infinitetalk import pipeline as pipeline_module
from infinitetalk import spill
from infinitetalk.errors import InputError, Interrupted
from infinitetalk.pipeline import (
    AudioEmbedding,
    InfiniteTalkPipeline,
    StillImage,
    _hash_tensor,
)
from infinitetalk.sinks import MemorySink, SegmentStore
from infinitetalk.windows import audio_window, padded_audio_length
from tests.unit.test_pipeline import (
    FakeAudioEncoder,
    FakeClip,
    FakeDiT,
    FakeText,
    FakeVAE,
    audio_embedding,
    fake_pipeline,
    small_config,
    test_image,
)

torch.set_num_threads(1)
POSIX = os.name == "posix"


# ============================================================================ the replaced code (oracles)
def old_pad_audio_features(features: torch.Tensor, end: int) -> torch.Tensor:
    length = features.shape[1]
    if end < length:
        return features
    miss = end - length + 3
    return torch.cat([features, features[:, -miss:].flip(1)], dim=1)


def old_audio_window(features: torch.Tensor, start: int, frame_num: int) -> torch.Tensor:
    centres = torch.arange(start, start + frame_num)[:, None] + torch.tensor([-2, -1, 0, 1, 2])[None]
    return features[:, centres.clamp(0, features.shape[1] - 1)]


def old_hash_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


@torch.no_grad()
def old_encode_features(encoder, features: torch.Tensor) -> torch.Tensor:
    hidden = encoder.model.feature_projection(features)
    hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    enc = encoder.model.encoder
    hidden = hidden + enc.pos_conv_embed(hidden)
    if not encoder.stable_layer_norm:
        hidden = enc.layer_norm(hidden)
    outputs = []
    for layer in enc.layers:
        out = layer(hidden, attention_mask=None)
        hidden = out[0] if isinstance(out, tuple) else out
        outputs.append(hidden)
    if encoder.stable_layer_norm:
        outputs[-1] = enc.layer_norm(hidden)
    return torch.cat(outputs, dim=0).transpose(0, 1).float().cpu()


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def wav2vec2(tmp_path_factory):
    from infinitetalk.encoders import load_audio_encoder
    from infinitetalk.tiny.encoders import write_wav2vec2

    paths = write_wav2vec2(tmp_path_factory.mktemp("w2v"), 3)
    return load_audio_encoder(paths["wav2vec2_dir"])


@pytest.fixture
def spill_everything(monkeypatch):
    monkeypatch.setenv(spill.SPILL_ENV, "0")


def speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    voiced = np.sin(2 * np.pi * (120 + 40 * seed) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * voiced + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def leftover_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ============================================================================ 1. virtual mirror padding
@pytest.mark.parametrize("length", [1, 2, 3, 4, 7, 10, 23])
@pytest.mark.parametrize("frame_num", [5, 9])
def test_virtual_padding_equals_pad_then_index(length, frame_num):
    """Every window start of every run end around the audio's end (padding absent, short, longer than L)."""
    feats = torch.randn(2, length, 3, 4)
    for end in range(frame_num, length + 2 * frame_num + 4):
        padded = old_pad_audio_features(feats, end)
        assert padded_audio_length(length, end) == padded.shape[1]
        for start in range(0, end - frame_num + 1):
            new = audio_window(feats, start, frame_num, padded_audio_length(length, end))
            assert torch.equal(new, old_audio_window(padded, start, frame_num)), (length, end, start)


def test_window_cast_equals_whole_run_cast():
    """The old code cast the whole run to the model dtype first; each window is cast now: same bits."""
    feats = torch.randn(2, 50, 3, 8) * 7
    length = padded_audio_length(50, 81)
    for dtype in (torch.bfloat16, torch.float16):
        for start in (0, 20, 40):
            first = audio_window(feats.to(dtype), start, 41, length)
            assert torch.equal(audio_window(feats, start, 41, length).to(dtype), first)


# ============================================================================ 2. encoder into one buffer
def test_encoder_writes_into_a_spilled_buffer_bit_identical_to_list_and_cat(
    wav2vec2, spill_everything, tmp_path
):
    from infinitetalk.encoders.wav2vec2 import linear_interpolation

    wave = speech(1.3, 0)
    x = torch.from_numpy(wave)[None]
    frames = wav2vec2.feature_shape(len(wave))[0]
    cnn = linear_interpolation(wav2vec2.model.feature_extractor(x).transpose(1, 2), frames)
    expected = old_encode_features(wav2vec2, cnn)
    buffer = spill.empty_tensor((2, *wav2vec2.feature_shape(len(wave))), torch.float32, tmp_path)
    assert spill.is_file_backed(buffer)
    wav2vec2.encode_features(cnn, out=buffer[1])
    assert torch.equal(buffer[1], expected)
    assert torch.equal(wav2vec2.encode(wave), wav2vec2.encode(wave, out=buffer[0]))
    with pytest.raises(ValueError, match="expected float32"):
        wav2vec2.encode(wave, out=torch.empty(frames, 1, 1))


def test_feed_forward_in_slices_equals_the_whole_clip(wav2vec2, monkeypatch):
    """Past ``ffn_chunk_frames`` the position-wise feed-forward runs a slice at a time: the same features (to
    float rounding: another matrix size may take another GEMM kernel), and the module is left as it was."""
    wave = speech(1.3, 0)
    whole = wav2vec2.encode(wave)
    calls = []
    feed_forward = wav2vec2.model.encoder.layers[0].feed_forward
    original = type(feed_forward).forward
    monkeypatch.setattr(
        type(feed_forward), "forward", lambda self, h: calls.append(h.shape[1]) or original(self, h)
    )
    monkeypatch.setattr(wav2vec2, "ffn_chunk_frames", 7)
    sliced = wav2vec2.encode(wave)
    layers = len(wav2vec2.model.encoder.layers)
    assert calls == ([7] * (whole.shape[0] // 7) + [whole.shape[0] % 7]) * layers  # every layer sliced
    assert torch.allclose(sliced, whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())
    assert all("forward" not in vars(layer.feed_forward) for layer in wav2vec2.model.encoder.layers)


def test_stable_layer_norm_encoder_into_buffer_equals_list_and_cat():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from infinitetalk.encoders.wav2vec2 import AudioEncoder

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[16] * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    encoder = AudioEncoder(Wav2Vec2Model(config).eval(), do_normalize=True)
    feats = encoder.model.feature_extractor(torch.randn(1, 6400) * 0.1).transpose(1, 2).detach()
    ours = encoder.encode_features(feats)
    assert ours.is_contiguous() and torch.equal(ours, old_encode_features(encoder, feats))


def test_prepare_audio_spills_features_mix_and_soundtrack_bit_identical(wav2vec2, monkeypatch, tmp_path):
    tracks = [(speech(2.0, 1), 16000), (np.stack([speech(1.5, 2)] * 2), 22050)]
    in_memory = InfiniteTalkPipeline(None, None, None, None, wav2vec2).prepare_audio(tracks, "add")
    assert not spill.is_file_backed(in_memory.features)

    monkeypatch.setenv(spill.SPILL_ENV, "0")
    folder = tmp_path / "spill"
    spilled = InfiniteTalkPipeline(None, None, None, None, wav2vec2, spill_dir=folder).prepare_audio(
        tracks, "add"
    )
    assert spill.is_file_backed(spilled.features)
    assert spill.is_file_backed(spilled.waveform_16k_mix) and spill.is_file_backed(spilled.soundtrack)
    if POSIX:
        assert leftover_files(folder) == []  # unlinked once mapped: nothing to clean, nothing to lose
    gc.collect()  # ComfyUI's cache keeps the embedding: the mapping stays valid without the file
    assert torch.equal(spilled.features, in_memory.features)
    assert np.array_equal(spilled.waveform_16k_mix, in_memory.waveform_16k_mix)
    assert np.array_equal(spilled.soundtrack, in_memory.soundtrack)
    assert spilled.soundtrack_rate == in_memory.soundtrack_rate == 22050


def test_one_speaker_soundtrack_is_the_callers_array(wav2vec2, spill_everything, tmp_path):
    wave = np.stack([speech(1.0, 3)] * 2)
    audio = InfiniteTalkPipeline(None, None, None, None, wav2vec2, spill_dir=tmp_path).prepare_audio(
        [(wave, 16000)]
    )
    assert audio.soundtrack is wave  # no copy in memory or on disk: the caller holds it already
    assert spill.is_file_backed(audio.features) and audio.features.shape[0] == 1


# ============================================================================ 3. runs, resume, fingerprint
def _recording(pipe: InfiniteTalkPipeline) -> list[tuple[int, torch.Tensor]]:
    """(window start, audio input of the DiT) of every window ``pipe`` prepares."""
    seen, prepare = [], pipe.prepare_window

    def prepare_window(plan, *args):
        win = prepare(plan, *args)
        seen.append((plan.start, win.audio.clone()))
        return win

    pipe.prepare_window = prepare_window
    return seen


def test_two_speaker_run_feeds_the_old_windows_and_spilling_changes_nothing(monkeypatch, tmp_path):
    """bf16 model dtype, 2 speakers, audio ending inside the last window (mirror padding used)."""
    g = torch.Generator().manual_seed(3)
    feats = torch.rand(2, 200, 2, 4, generator=g)
    config = small_config(size="128x64", batch_guidance=True)
    outputs = []
    for threshold in (None, "0"):
        if threshold is not None:
            monkeypatch.setenv(spill.SPILL_ENV, threshold)
        buffer = spill.empty_tensor(tuple(feats.shape), torch.float32, tmp_path)
        buffer.copy_(feats)
        assert spill.is_file_backed(buffer) == (threshold is not None)
        pipe = InfiniteTalkPipeline(
            FakeDiT(), FakeVAE(), FakeClip(), FakeText(), FakeAudioEncoder(), dtype=torch.bfloat16
        )
        seen, sink = _recording(pipe), MemorySink()
        pipe.generate(test_image(64, 128), AudioEmbedding(buffer, None, 200), config, sink)
        end = seen[-1][0] + config.frame_num
        assert end > 200  # the last window reads the padding
        padded = old_pad_audio_features(feats, end).to(torch.bfloat16)
        for start, audio in seen:
            assert torch.equal(audio, old_audio_window(padded, start, config.frame_num)[None]), start
        outputs.append(sink.frames)
    assert outputs[0].shape[0] == 200 and np.array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("shape", [(2, 301, 3, 5), (3, 1, 7), (0, 4), (37,)])
def test_fingerprint_hash_in_chunks_equals_one_contiguous_copy(shape):
    t = torch.randn(*shape)
    variants = [t, t.to(torch.bfloat16)]
    if t.ndim >= 2:
        variants.append(t.transpose(0, 1))  # not contiguous: the old code copied it first
    for v in variants:
        for chunk in (1, 7, 64, 1 << 20):
            old, new = hashlib.sha256(), hashlib.sha256()
            old_hash_tensor(old, v)
            _hash_tensor(new, v, chunk_bytes=chunk)
            assert new.hexdigest() == old.hexdigest(), (tuple(v.shape), v.dtype, chunk)


def test_run_fingerprint_is_unchanged_and_spilling_keeps_it(monkeypatch, tmp_path):
    audio = audio_embedding(150, speakers=2)
    args = (StillImage(test_image()), audio, small_config(), None)
    new = fake_pipeline().fingerprint(*args)
    monkeypatch.setattr(pipeline_module, "_hash_tensor", old_hash_tensor)
    assert fake_pipeline().fingerprint(*args) == new  # the value of the code before this change
    monkeypatch.undo()
    monkeypatch.setenv(spill.SPILL_ENV, "0")
    buffer = spill.empty_tensor(tuple(audio.features.shape), torch.float32, tmp_path)
    buffer.copy_(audio.features)
    spilled = AudioEmbedding(buffer, audio.waveform_16k_mix, audio.num_frames)
    assert fake_pipeline().fingerprint(args[0], spilled, *args[2:]) == new


def test_cancel_in_memory_then_resume_spilled_is_identical(monkeypatch, tmp_path):
    """A run stopped with its features in memory resumes with them file-backed (another threshold, or
    another process) into the video of one uninterrupted run."""
    frames, config, image = 81 + 72 * 2, small_config(), test_image()
    audio = audio_embedding(frames)
    with pytest.raises(Interrupted):
        fake_pipeline().generate(
            image,
            audio,
            config,
            SegmentStore(tmp_path / "a", codec="h264-lossless"),
            should_cancel=iter([False] * 3 + [True]).__next__,
        )
    monkeypatch.setenv(spill.SPILL_ENV, "0")
    buffer = spill.empty_tensor(tuple(audio.features.shape), torch.float32, tmp_path / "spill")
    buffer.copy_(audio.features)
    spilled = AudioEmbedding(buffer, audio.waveform_16k_mix, frames)
    resumed = fake_pipeline().generate(
        image, spilled, config, SegmentStore(tmp_path / "a", codec="h264-lossless"), resume=True
    )
    assert resumed.windows_run == [1, 2]
    memory = MemorySink()
    fake_pipeline().generate(image, audio, config, memory)
    store = SegmentStore(tmp_path / "a", codec="h264-lossless")
    store.begin(fake_pipeline().fingerprint(StillImage(image), audio, config, None), resume=True)
    assert np.array_equal(np.stack(list(store.iter_frames())), memory.frames)


# ============================================================================ 4. the spill module
def test_threshold_from_environment(monkeypatch):
    monkeypatch.delenv(spill.SPILL_ENV, raising=False)
    assert spill.spill_threshold() == spill.DEFAULT_SPILL_MB << 20
    monkeypatch.setenv(spill.SPILL_ENV, "1.5")
    assert spill.spill_threshold() == 3 << 19
    assert not spill.is_file_backed(spill.empty_tensor((1 << 18,)))  # 1 MiB: below 1.5 MiB
    assert spill.is_file_backed(spill.empty_array((1 << 19,), np.float32))  # 2 MiB: above
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(spill.SPILL_ENV, bad)
        with pytest.raises(InputError, match=f"{spill.SPILL_ENV}=.*set a number >= 0"):
            spill.spill_threshold()


def test_full_disk_is_one_clear_error_and_leaves_no_file(spill_everything, monkeypatch, tmp_path):
    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_room, raising=False)
    with pytest.raises(
        InputError, match=r"spill folder .* has no room for .*free disk space there, or raise"
    ):
        spill.empty_tensor((1000, 12, 768), torch.float32, tmp_path)
    assert leftover_files(tmp_path) == []


def test_read_audio_into_a_spilled_buffer_equals_in_memory(spill_everything, tmp_path):
    import soundfile as sf

    from infinitetalk.media.stream import read_audio

    wave = np.stack([speech(1.2, 4), speech(1.2, 5)], 1)  # (N, 2)
    sf.write(tmp_path / "a.wav", wave, 24000, subtype="FLOAT")
    spilled, sr = read_audio(tmp_path / "a.wav", spill_dir=tmp_path / "spill")
    assert sr == 24000 and spill.is_file_backed(spilled)
    assert np.array_equal(spilled, wave.T)
    if POSIX:
        assert leftover_files(tmp_path / "spill") == []
