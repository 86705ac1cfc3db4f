import pickle

import numpy as np

from modeling_avis.tracks import AvisMaskStore, AvisTrack, AvisTrackMasks, decode_mask, encode_mask


def test_rle_round_trip_keeps_every_pixel():
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.6
    rle = encode_mask(mask)
    assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode_mask(rle), mask)


def test_track_areas_count_mask_pixels_per_frame():
    masks = np.zeros((3, 8, 10), dtype=bool)
    masks[0, :2, :3] = True
    masks[2] = True
    track = AvisTrack(1, 3, "cello", 0.9, [encode_mask(m) for m in masks])
    assert track.areas().tolist() == [6, 0, 80]
    np.testing.assert_array_equal(track.mask(0), masks[0])


def test_mask_store_moves_to_disk_past_its_budget_and_reads_every_mask_back():
    rng = np.random.default_rng(1)
    masks = rng.random((40, 30, 20)) > 0.5  # noisy: about 1 KB of RLE each
    store = AvisMaskStore(30, 20, memory_budget=4096)
    spans = np.array([store.append(mask) for mask in masks])
    assert store.nbytes == spans[:, 1].sum() > 4096 and store._file._rolled  # on disk, not in memory
    track = AvisTrackMasks(store, spans)
    assert len(track) == 40 and track[3] == encode_mask(masks[3]) and track[-1] == encode_mask(masks[-1])
    assert track[10:12] == [encode_mask(m) for m in masks[10:12]]
    np.testing.assert_array_equal(np.stack([decode_mask(rle) for rle in track]), masks)


def test_stored_track_masks_compare_and_pickle_as_the_list_of_their_rles():
    masks = np.zeros((3, 8, 10), dtype=bool)
    masks[1, 2:5, 3:7] = True
    store = AvisMaskStore(8, 10)
    stored = AvisTrackMasks(store, np.array([store.append(m) for m in masks]))
    as_list = [encode_mask(m) for m in masks]
    assert stored == as_list and stored != as_list[:2]
    assert pickle.loads(pickle.dumps(stored)) == as_list and type(pickle.loads(pickle.dumps(stored))) is list
    assert AvisTrack(1, 0, "person", 0.5, stored).areas().tolist() == [0, 12, 0]
