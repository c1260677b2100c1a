import pytest
import torch
from sentence_transformers import SentenceTransformer

from ce_utils.config import ConfigError
from ce_utils.students import RANDOM, backbone, compose_student, layer_subset_student, num_layers


@pytest.fixture(scope="module")
def teacher(tiny_bert_dir):
    return SentenceTransformer(str(tiny_bert_dir), device="cpu")


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_subset_student_copies_exactly_the_chosen_layers(teacher):
    student = layer_subset_student(teacher, [0, 5])
    assert num_layers(student) == 2 and backbone(student).config.num_hidden_layers == 2
    t, s = backbone(teacher), backbone(student)
    assert _same(s.encoder.layer[0], t.encoder.layer[0])
    assert _same(s.encoder.layer[1], t.encoder.layer[5])
    assert not _same(s.encoder.layer[1], t.encoder.layer[1])
    assert _same(s.embeddings, t.embeddings)
    assert num_layers(teacher) == 6  # the teacher is untouched
    emb = student.encode(["cell protein gene"])
    assert emb.shape == (1, t.config.hidden_size)


def test_compose_with_random_layer_and_embeddings(teacher):
    student = compose_student(teacher, [(teacher, 0), RANDOM], embeddings=RANDOM, seed=1)
    s, t = backbone(student), backbone(teacher)
    assert _same(s.encoder.layer[0], t.encoder.layer[0])
    assert not _same(s.encoder.layer[1], t.encoder.layer[1])
    assert not _same(s.embeddings, t.embeddings)
    again = compose_student(teacher, [(teacher, 0), RANDOM], embeddings=RANDOM, seed=1)
    assert _same(backbone(again), s)  # seeded


def test_bad_layer_index_says_the_range(teacher):
    with pytest.raises(ConfigError, match=r"layers 0\.\.5"):
        layer_subset_student(teacher, [0, 6])
    with pytest.raises(ConfigError, match="Repeated"):
        layer_subset_student(teacher, [1, 1])
