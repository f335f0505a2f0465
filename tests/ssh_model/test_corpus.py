import pytest

from ssh_model.corpus import ENV_VAR, CorpusMissing, corpus_root, object_masks, photos


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really an image")
    return path


@pytest.fixture
def tree(tmp_path):
    """A miniature corpus: one train photo, two holdout photos (one of them with two masks), and clutter."""
    root = tmp_path / "photos"
    _touch(root / "train" / "a" / "x.jpg")
    _touch(root / "train" / "a" / "notes.txt")
    _touch(root / "holdout" / "b" / "y.png")
    _touch(root / "holdout" / "c" / "z.JPEG")
    _touch(root / "masks" / "holdout" / "bsds500" / "y_1.png")
    _touch(root / "masks" / "holdout" / "bsds500" / "y_2.png")
    _touch(root / "masks" / "holdout" / "bsds500" / "y_edges.png")  # no _<k>: not an object mask
    _touch(root / "masks" / "holdout" / "bsds500" / "y_3.txt")
    return root


def test_given_a_folder_without_train_and_holdout_when_the_root_is_asked_then_corpus_missing_names_it(tmp_path):
    (tmp_path / "train").mkdir()  # holdout/ is missing
    with pytest.raises(CorpusMissing) as caught:
        corpus_root(tmp_path)
    assert str(tmp_path) in str(caught.value)
    assert ENV_VAR in str(caught.value) and ENV_VAR == "SSH_PHOTO_CORPUS"
    assert isinstance(caught.value, FileNotFoundError)


def test_given_the_env_var_on_an_empty_folder_when_the_root_is_asked_then_corpus_missing_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(CorpusMissing, match="SSH_PHOTO_CORPUS") as caught:
        corpus_root()
    assert str(tmp_path) in str(caught.value)


def test_given_the_env_var_on_a_corpus_when_the_root_is_asked_then_it_is_that_folder(tree, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tree))
    assert corpus_root() == tree
    with pytest.raises(CorpusMissing):
        corpus_root(tmp_path)  # an explicit root wins over the env var


def test_given_a_corpus_when_photos_are_listed_then_each_split_has_its_photos_sorted(tree):
    root = corpus_root(tree)
    assert root == tree
    assert photos(root, "train") == [tree / "train" / "a" / "x.jpg"]
    assert photos(root, "holdout") == [tree / "holdout" / "b" / "y.png", tree / "holdout" / "c" / "z.JPEG"]


def test_given_a_corpus_when_object_masks_are_listed_then_they_map_photo_stems_to_their_numbered_masks(tree):
    masks = tree / "masks" / "holdout" / "bsds500"
    assert object_masks(tree, "holdout") == {"y": [masks / "y_1.png", masks / "y_2.png"]}
    assert object_masks(tree, "train") == {}


def test_given_an_unknown_split_when_photos_are_listed_then_value_error(tree):
    with pytest.raises(ValueError, match="val"):
        photos(tree, "val")


def test_given_this_machine_when_the_real_corpus_is_asked_for_then_its_holdout_masks_belong_to_holdout_photos():
    try:
        root = corpus_root()
    except CorpusMissing as missing:  # a machine without the research photos: the clear error is the contract
        assert ENV_VAR in str(missing)
        return
    holdout = photos(root, "holdout")
    assert holdout, f"no holdout photos under {root}"
    masks = object_masks(root, "holdout")
    assert masks, f"no holdout object masks under {root}"
    stems = {p.stem for p in holdout}
    assert set(masks) <= stems, sorted(set(masks) - stems)[:5]
    assert not stems & {p.stem for p in photos(root, "train")}, "a holdout photo is also a training photo"
