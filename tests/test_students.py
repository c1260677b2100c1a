import pytest
import torch

from ce_utils.core.config import ConfigError
from ce_utils.core.students import RANDOM, backbone, compose_student, layer_subset_student, num_layers, same_weights


def test_subset_student_copies_exactly_the_chosen_layers(teacher):
    student = layer_subset_student(teacher, [0, 5])
    assert num_layers(student) == 2 and backbone(student).config.num_hidden_layers == 2
    t, s = backbone(teacher), backbone(student)
    assert same_weights(s.encoder.layer[0], t.encoder.layer[0])
    assert same_weights(s.encoder.layer[1], t.encoder.layer[5])
    assert not same_weights(s.encoder.layer[1], t.encoder.layer[1])
    assert same_weights(s.embeddings, t.embeddings)
    assert num_layers(teacher) == 6  # the teacher is untouched
    emb = student.encode(["cell protein gene"])
    assert emb.shape == (1, t.config.hidden_size)


def test_compose_with_random_layer_and_embeddings(teacher):
    student = compose_student(teacher, [(teacher, 0), RANDOM], embeddings=RANDOM, seed=1)
    s, t = backbone(student), backbone(teacher)
    assert same_weights(s.encoder.layer[0], t.encoder.layer[0])
    assert not same_weights(s.encoder.layer[1], t.encoder.layer[1])
    assert not same_weights(s.embeddings, t.embeddings)
    again = compose_student(teacher, [(teacher, 0), RANDOM], embeddings=RANDOM, seed=1)
    assert same_weights(backbone(again), s)  # seeded


def test_bad_layer_index_says_the_range(teacher):
    with pytest.raises(ConfigError, match=r"layers 0\.\.5"):
        layer_subset_student(teacher, [0, 6])
    with pytest.raises(ConfigError, match="Repeated"):
        layer_subset_student(teacher, [1, 1])


def test_same_weights_tells_copies_from_changes(teacher):
    t = backbone(teacher)
    copy_ = layer_subset_student(teacher, [2])
    assert same_weights(backbone(copy_).encoder.layer[0], t.encoder.layer[2])
    changed = layer_subset_student(teacher, [2])
    with torch.no_grad():
        next(backbone(changed).encoder.layer[0].parameters()).add_(1e-6)
    assert not same_weights(backbone(changed).encoder.layer[0], t.encoder.layer[2])
    assert not same_weights(t.encoder.layer[0], t.embeddings)  # different parameter names


def test_composed_student_returns_its_own_hidden_states(teacher):
    """transformers installs its hidden-state hooks once per model: a student assembled from a
    template that already ran with output_hidden_states must still report every layer it has."""
    import copy

    import numpy as np

    from ce_utils.core.layers import encode_layers
    from ce_utils.core.students import RANDOM, compose_student

    texts = ["cell protein gene", "heart blood pressure artery"]
    template = copy.deepcopy(teacher)
    encode_layers(template, texts, "de", max_length=16, progress=False)  # hooks installed on the template
    other = copy.deepcopy(teacher)
    student = compose_student(template, [(other, 0), RANDOM], seed=1)
    emb = encode_layers(student, texts, "de", max_length=16, progress=False)
    assert emb.shape == (3, 2, 32)
    np.testing.assert_allclose(emb[-1], student.encode(texts, convert_to_numpy=True), atol=1e-4)
