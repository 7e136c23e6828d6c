import json

import keras
import numpy as np
import pytest
from gradients import value_and_gradients
from helpers import load_parity, max_abs_error, parity_path, require_module, to_numpy

from keras_bat.models.bat import backbone_parameters, decoder_parameters, load_official_pretrainer_weights
from keras_bat.layers import inverse_block_mask
from keras_bat.models import BATPretrainer

TINY = {"encoder": {"dim": 64, "depth": 3, "num_heads": 4}, "decoder_depth": 2, "decoder_heads": 4,
        "time_frames": 1024, "num_views": 2}


@pytest.fixture(scope="module")
def ssl_outputs():
    return load_parity("ssl_outputs.safetensors")


@pytest.fixture
def official_pretrainer():
    student = load_parity("ssl_student_weights.safetensors")
    teacher = load_parity("ssl_teacher_weights.safetensors")
    state = {**student, **{"ema_" + k: v for k, v in teacher.items()}}
    pretrainer = BATPretrainer(**TINY)
    load_official_pretrainer_weights(pretrainer, state)
    return pretrainer


def test_forward_matches_official(official_pretrainer, ssl_outputs):
    out = official_pretrainer.forward_with_masks(
        ssl_outputs["input"][:, 0], ssl_outputs["ids_keep_sorted"], ssl_outputs["mask"])
    for key in ("student_cls", "student_patch", "teacher_targets", "global_loss", "local_loss"):
        assert max_abs_error(out[key], ssl_outputs[key]) <= 1e-4, key


def test_gradients_match_official(official_pretrainer, ssl_outputs):
    params = {**{f"encoder.{k}": p for k, p in backbone_parameters(official_pretrainer.student).items()},
              **{f"decoder.{k}": p for k, p in decoder_parameters(official_pretrainer.decoder).items()}}
    names = [name for name, p in params.items() if p.variable.trainable]
    assert sorted(names) == sorted(k[len("grad/"):] for k in ssl_outputs if k.startswith("grad/"))

    def loss_fn():
        out = official_pretrainer.forward_with_masks(
            ssl_outputs["input"][:, 0], ssl_outputs["ids_keep_sorted"], ssl_outputs["mask"])
        return out["global_loss"] + out["local_loss"]

    _, grads = value_and_gradients(loss_fn, [params[name].variable for name in names])
    for name, grad in zip(names, grads):
        expected = ssl_outputs[f"grad/{name}"]
        error = np.abs(params[name].to_official(to_numpy(grad)) - expected).max()
        assert error <= 1e-4 * np.abs(expected).max(), name


def test_official_pretraining_checkpoint_loads():
    require_module("torch")  # the official checkpoint is a torch.save file
    pretrainer = BATPretrainer(**TINY)
    steps = load_official_pretrainer_weights(pretrainer, parity_path("official_pretrain_checkpoint.pt"))
    assert steps == 7
    student = load_parity("ssl_student_weights.safetensors")
    teacher = load_parity("ssl_teacher_weights.safetensors")
    for prefix, part, expected in (("encoder.", pretrainer.student, student),
                                   ("decoder.", pretrainer.decoder, student),
                                   ("encoder.", pretrainer.teacher, teacher)):
        mapping = decoder_parameters(part) if prefix == "decoder." else backbone_parameters(part)
        for name, param in mapping.items():
            np.testing.assert_array_equal(param.to_official(to_numpy(param.variable)), expected[prefix + name])


def test_inverse_block_masks():
    masks = inverse_block_mask(6, time_patches=64, freq_patches=8, mask_ratio=0.8, seed=3)
    ids, mask = to_numpy(masks["ids_keep_sorted"]).astype(int), to_numpy(masks["mask"])
    assert ids.shape == (6, int(512 * 0.2)) and mask.shape == (6, 512)
    assert (np.diff(ids, axis=1) > 0).all()  # ascending, no repeats
    assert (mask.sum(axis=1) == 512 - ids.shape[1]).all()
    for row_ids, row_mask in zip(ids, mask):
        assert (row_mask[row_ids] == 0).all()
    assert len({tuple(row) for row in ids}) == 6  # every view differs
    # Kept patches come in blocks: most have a kept neighbour (about 59% for random patches).
    kept = (1 - mask).reshape(6, 64, 8)
    padded = np.pad(kept, ((0, 0), (1, 1), (1, 1)))
    neighbours = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
    assert ((neighbours > 0) & (kept > 0)).sum() / kept.sum() > 0.85
    with pytest.raises(ValueError, match="mask_ratio"):
        inverse_block_mask(1, 4, 4, mask_ratio=1.0)


def test_ema_schedule_matches_official():
    ema = json.loads(parity_path("schedules.json").read_text())["ema"]
    pretrainer = BATPretrainer(encoder={"dim": 16, "depth": 1, "num_heads": 2}, decoder_depth=1, decoder_heads=2,
                               time_frames=64, ema_decay_start=ema["decay_start"], ema_decay_end=ema["decay_end"],
                               ema_warmup_steps=ema["warmup_steps"])
    values = [float(to_numpy(pretrainer.ema_decay(step))) for step in range(len(ema["values_per_step"]))]
    np.testing.assert_allclose(values, ema["values_per_step"], rtol=0, atol=1e-7)


def test_fit_lowers_loss_and_moves_teacher_by_ema():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 256, 128)).astype("float32")
    x[:, :, :64] *= 0.2
    pretrainer = BATPretrainer(encoder={"dim": 32, "depth": 2, "num_heads": 4}, decoder_depth=1, decoder_heads=4,
                               time_frames=256, num_views=2, ema_decay_start=0.9, ema_decay_end=0.99,
                               ema_warmup_steps=10, seed=1)
    pretrainer.compile(learning_rate=1e-3)
    student_before = [to_numpy(w) for w in pretrainer.student.weights]
    teacher_before = [to_numpy(w) for w in pretrainer.teacher.weights]
    np.testing.assert_array_equal(student_before[0], teacher_before[0])  # they start equal
    pretrainer.train_on_batch(x[:2])
    # One update: teacher = 0.9 * teacher + 0.1 * student, with the updated student.
    for t0, t1, s1 in zip(teacher_before, pretrainer.teacher.weights, pretrainer.student.weights):
        np.testing.assert_allclose(to_numpy(t1), 0.9 * t0 + 0.1 * to_numpy(s1), atol=1e-6)
    history = pretrainer.fit(x, batch_size=2, epochs=6, verbose=0).history
    assert history["loss"][-1] < 0.85 * history["loss"][0]
    assert set(history) >= {"loss", "global_loss", "local_loss"}
    backbone = pretrainer.export_backbone("teacher")
    np.testing.assert_array_equal(to_numpy(backbone.weights[0]), to_numpy(pretrainer.teacher.weights[0]))


def test_bad_pretrainer_configuration():
    with pytest.raises(ValueError, match="one chunk"):
        BATPretrainer(encoder={"dim": 16, "depth": 1, "num_heads": 2}, time_frames=2048)
    with pytest.raises(ValueError, match="`which`"):
        BATPretrainer(encoder={"dim": 16, "depth": 1, "num_heads": 2}, decoder_depth=1, decoder_heads=2,
                      time_frames=64).export_backbone("ema")


def _small_pretrainer(init_seed=0, **overrides):
    keras.utils.set_random_seed(init_seed)
    config = dict(encoder={"dim": 32, "depth": 2, "num_heads": 4}, decoder_depth=1, decoder_heads=4,
                  time_frames=128, num_views=2, ema_warmup_steps=10, seed=1)
    pretrainer = BATPretrainer(**{**config, **overrides})
    pretrainer.compile(learning_rate=1e-3)
    return pretrainer


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption")


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    x = np.random.default_rng(0).uniform(size=(4, 128, 128)).astype("float32")
    straight = _small_pretrainer()
    straight.fit(x, batch_size=2, epochs=4, shuffle=False, verbose=0)
    interrupted = _small_pretrainer()
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(x, batch_size=2, epochs=4, shuffle=False, verbose=0,
                        callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path)), _Interrupt()])
    # Other initial weights and mask seed: only what the backup restores can make the runs agree.
    resumed = _small_pretrainer(init_seed=7, seed=2)
    resumed.fit(x, batch_size=2, epochs=4, shuffle=False, verbose=0,
                callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path))])
    assert int(to_numpy(resumed.optimizer.iterations)) == int(to_numpy(straight.optimizer.iterations)) == 8
    for a, b in zip(straight.weights, resumed.weights):  # student, decoder and teacher
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), atol=1e-5)
    unrestored = _small_pretrainer(init_seed=7, seed=2)
    unrestored.fit(x, batch_size=2, epochs=2, shuffle=False, verbose=0)  # the two epochs left, from nothing
    assert not np.allclose(to_numpy(unrestored.weights[0]), to_numpy(straight.weights[0]), atol=1e-5)


def _assert_teacher_moved_by_ema(pretrainer, teacher_before, decay):
    """teacher = decay * teacher_before + (1 - decay) * student, for every teacher weight."""
    for teacher, before, student in zip(pretrainer.teacher.weights, teacher_before, pretrainer.student.weights):
        expected = decay * before + (1.0 - decay) * to_numpy(student)
        np.testing.assert_allclose(to_numpy(teacher), expected, rtol=1e-5, atol=1e-7)


def test_teacher_follows_the_ema_formula_with_its_decay_schedule():
    pretrainer = _small_pretrainer(ema_decay_start=0.5, ema_decay_end=0.9, ema_warmup_steps=3)
    x = np.random.default_rng(0).uniform(size=(2, 128, 128)).astype("float32")
    for update, decay in enumerate([0.5, 0.7, 0.9, 0.9]):  # rising linearly over 3 updates, then flat
        assert float(to_numpy(pretrainer.ema_decay(update))) == pytest.approx(decay)
        teacher_before = [to_numpy(w) for w in pretrainer.teacher.weights]
        pretrainer.train_on_batch(x)
        _assert_teacher_moved_by_ema(pretrainer, teacher_before, decay)


def test_teacher_waits_for_accumulated_updates():
    pretrainer = _small_pretrainer(ema_decay_start=0.5, ema_decay_end=0.9, ema_warmup_steps=3)
    pretrainer.compile(optimizer=keras.optimizers.AdamW(1e-3, gradient_accumulation_steps=2))
    x = np.random.default_rng(0).uniform(size=(2, 128, 128)).astype("float32")
    teacher_before = [to_numpy(w) for w in pretrainer.teacher.weights]
    pretrainer.train_on_batch(x)  # accumulates only
    for before, after in zip(teacher_before, pretrainer.teacher.weights):
        np.testing.assert_array_equal(to_numpy(after), before)
    pretrainer.train_on_batch(x)  # updates the student, then the teacher with the first update's decay
    _assert_teacher_moved_by_ema(pretrainer, teacher_before, 0.5)


def test_mixed_bfloat16_pretrainer_stays_close(official_pretrainer, ssl_outputs):
    half = BATPretrainer(**{**TINY, "encoder": {**TINY["encoder"], "dtype": "mixed_bfloat16"}})
    half.set_weights(official_pretrainer.get_weights())
    args = (ssl_outputs["input"][:, 0], ssl_outputs["ids_keep_sorted"], ssl_outputs["mask"])
    out, reference = half.forward_with_masks(*args), official_pretrainer.forward_with_masks(*args)
    assert keras.backend.standardize_dtype(out["local_loss"].dtype) == "float32"
    for key in ("global_loss", "local_loss"):
        assert abs(float(to_numpy(out[key])) - float(to_numpy(reference[key]))) < 0.03 * float(to_numpy(reference[key]))


def test_pretrains_on_waveforms_through_a_frontend():
    from keras_bat.layers import LogMelSpectrogram

    pretrainer = _small_pretrainer(frontend=LogMelSpectrogram(time_frames=128))
    waveforms = np.random.default_rng(0).normal(size=(2, 20000)).astype("float32") * 0.1
    history = pretrainer.fit(waveforms, batch_size=2, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()


def test_fit_draws_its_views_and_mask_ratio(monkeypatch):
    """`fit` and `call` run `num_views` masked views of every clip, each keeping
    `int(N * (1 - mask_ratio))` patches (settings away from the defaults, so that a default
    used instead of the setting fails)."""
    pretrainer = _small_pretrainer(num_views=3, mask_ratio=0.6)
    patches = pretrainer.time_patches * pretrainer.freq_patches  # 8 x 8
    kept = int(patches * 0.4)
    seen = []
    original = pretrainer.forward_with_masks

    def recording(spectrograms, ids_keep_sorted, mask, training=False):
        seen.append({"clips": spectrograms.shape[0], "ids": ids_keep_sorted, "mask": mask, "training": training})
        return original(spectrograms, ids_keep_sorted, mask, training=training)

    monkeypatch.setattr(pretrainer, "forward_with_masks", recording)
    x = np.random.default_rng(0).uniform(size=(4, 128, 128)).astype("float32")
    pretrainer.fit(x, batch_size=2, epochs=1, verbose=0)
    assert any(s["training"] for s in seen)  # (a first call may build the model in inference mode)
    for step in seen:  # shapes are known when the step is traced, on every backend
        assert tuple(step["ids"].shape) == (2 * 3, kept) and tuple(step["mask"].shape) == (2 * 3, patches)
    seen.clear()
    pretrainer(x[:2], training=True)
    ids, mask = to_numpy(seen[0]["ids"]).astype(int), to_numpy(seen[0]["mask"])
    np.testing.assert_array_equal(mask.sum(axis=1), patches - kept)  # 60 % of the patches removed per view
    for row_ids, row_mask in zip(ids, mask):
        assert (row_mask[row_ids] == 0).all()
    assert len({tuple(row) for row in ids}) == 6  # the 3 views of each of the 2 clips differ


def test_fit_moves_the_teacher_with_the_scheduled_decay():
    """In `fit`, after update k (from 0) the teacher is `d_k teacher + (1 - d_k) student`, with
    `d_k` rising linearly from the start to the end decay over the warm-up updates, then flat."""
    start, end, warmup = 0.6, 0.96, 4
    pretrainer = _small_pretrainer(ema_decay_start=start, ema_decay_end=end, ema_warmup_steps=warmup)
    x = np.random.default_rng(1).uniform(size=(2, 128, 128)).astype("float32")
    snapshots = [([to_numpy(w) for w in pretrainer.teacher.weights], None)]

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(([to_numpy(w) for w in pretrainer.teacher.weights],
                              [to_numpy(w) for w in pretrainer.student.weights]))

    pretrainer.fit(x, batch_size=2, epochs=6, verbose=0, callbacks=[Snapshot()])  # one update an epoch
    for k in range(6):
        decay = start + (end - start) * k / (warmup - 1) if k < warmup else end
        (before, _), (teacher, student) = snapshots[k], snapshots[k + 1]
        for b, t, s in zip(before, teacher, student):
            np.testing.assert_allclose(t, decay * b + (1 - decay) * s, rtol=1e-5, atol=1e-6,
                                       err_msg=f"update {k}: decay {decay}")
