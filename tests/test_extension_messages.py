"""The CUDA extensions' error messages put only text into TORCH_CHECK: on the GPU machine a number streamed into one
segfaulted inside ostream's integer insert compiled into our library (docs/BENCHMARKS.md, seventeenth session), so
a bad flag killed the process instead of raising. Numbers go in as std::to_string(...)."""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "submodules", "*", "csrc", "*.cu"))
                 + glob.glob(os.path.join(ROOT, "submodules", "*", "csrc", "*.cpp")))
# what a message argument may be: a string literal (possibly a macro's `name "..."` concatenation), a number made text,
# CUDA's error string, or one of the const char* parameters the sources pass on (a flag's or a tensor's name, a flag's
# two words)
TEXT = re.compile(r'^("|\w+\s+"|std::to_string\(|cudaGetErrorString\(|(name|where|env|yes|no)$)')


def _calls(source, macro="TORCH_CHECK"):
    """The argument lists of each call of `macro` in C++ source text, split at the top-level commas."""
    for m in re.finditer(r"\b%s\(" % macro, source):
        depth, i, args, start, quoted = 1, m.end(), [], m.end(), False
        while depth:
            c = source[i]
            if quoted:
                quoted = not (c == '"' and source[i - 1] != "\\")
            elif c == '"':
                quoted = True
            elif c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
            elif c == "," and depth == 1:
                args.append(source[start:i].strip())
                start = i + 1
            i += 1
        args.append(source[start:i - 1].strip())
        yield source.count("\n", 0, m.start()) + 1, args


def test_the_parser_finds_a_number_in_a_message():
    src = 'TORCH_CHECK(n <= most, name, " must be at most ", most, ", not ", std::to_string(n), "(", f(a, b), ")");'
    ((line, args),) = _calls(src)
    assert line == 1 and args[0] == "n <= most" and len(args) == 9
    assert [a for a in args[1:] if not TEXT.match(a)] == ["most", "f(a, b)"]


def test_extension_messages_are_text_only():
    assert len(SOURCES) >= 5, SOURCES  # (the rasterizer's and simple-knn's sources are where they were)
    bad = []
    for path in SOURCES:
        with open(path) as f:
            source = f.read()
        # (the macro's own definition lines are not calls: skip `#define` lines)
        source = re.sub(r"^#define .*$", "", source, flags=re.M)
        for line, args in _calls(source):
            bad += [f"{os.path.relpath(path, ROOT)}:{line}: {a}" for a in args[1:] if not TEXT.match(a)]
    assert not bad, "a TORCH_CHECK message argument that is not text (use std::to_string): " + "; ".join(bad)
