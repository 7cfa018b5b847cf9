"""Finding and substituting concept words in prompts."""
from mixofshow_core.words import find_words, substitute, unknown_angle_words


def test_longest_word_wins_and_order_is_kept():
    words = ["<cat>", "<cat2>", "<dog>"]
    assert find_words("a <cat2> and <cat> and <dog>, <cat2>", words) == ["<cat2>", "<cat>", "<dog>", "<cat2>"]


def test_substitute_keeps_words_separate():
    assert substitute("<a><b>, x", {"<a>": "qqq", "<b>": "zzz"}).split() == ["qqq", "zzz", ",", "x"]


def test_unknown_angle_words_are_reported():
    assert unknown_angle_words("a <potter1> <poter2> <cat>", ["<potter1>", "<potter2>"]) == ["<cat>", "<poter2>"]
