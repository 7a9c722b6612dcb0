"""Every public name has a numpydoc docstring with its Parameters and Returns (numpydoc's own
validation, the rules of the numpydoc docstring guide): the names of ``convexgan.__all__`` and
``layerwise.__all__``, and the public methods and properties their classes define."""
import inspect

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

import convexgan  # noqa: E402
import layerwise  # noqa: E402
from convexgan.data import FaceData, LabelledImages, data_root, dataset_folder, face_dataset, labelled_images  # noqa: E402,E501

# GL08 no docstring; SS01 no summary; PR01 a parameter not documented; PR02 a documented parameter
# that does not exist; PR07 a parameter without a description; RT01 no Returns section; RT03 a
# return value without a description; GL06 an unknown section; GL07 sections out of order.
CHECKS = {"GL08", "SS01", "PR01", "PR02", "PR07", "RT01", "RT03", "GL06", "GL07"}


def _qualified(obj):
    return f"{obj.__module__}.{obj.__qualname__}"


def _own_bases(cls):
    """The classes of ``cls.__mro__`` that this library defines (not scikit-learn's or torch's)."""
    return [base for base in cls.__mro__ if base.__module__.split(".")[0] in ("convexgan", "layerwise")]


def _documented(cls, member):
    """The qualified name of ``cls.member``, or of the base-class method it overrides when it has no
    docstring of its own: that is the docstring ``help()`` and the API reference show."""
    for base in _own_bases(cls):
        value = vars(base).get(member)
        function = value.fget if isinstance(value, property) else value
        if getattr(function, "__doc__", None):
            return f"{_qualified(base)}.{member}"
    return f"{_qualified(cls)}.{member}"


def _function(value):
    value = value.fget if isinstance(value, property) else value
    return value.__func__ if isinstance(value, (staticmethod, classmethod)) else value


def public_names():
    """Fully qualified names (as numpydoc imports them) of the public API and its classes' public
    methods and properties, inherited ones included."""
    objects = [getattr(convexgan, name) for name in convexgan.__all__]
    objects += [getattr(layerwise, name) for name in layerwise.__all__] + [data_root, dataset_folder, face_dataset, FaceData, labelled_images, LabelledImages]
    names = []
    for obj in objects:
        names.append(_qualified(obj))
        if inspect.isclass(obj):
            members = {member for base in _own_bases(obj) for member, value in vars(base).items()
                       if not member.startswith("_") and inspect.isfunction(_function(value))}
            names += [_documented(obj, member) for member in members]
    return sorted(set(names))


def test_the_walk_finds_the_public_api():
    names = public_names()
    assert "convexgan.models.ConvexReLU.fit" in names and "layerwise.classifier.LayerwiseConvexClassifier" in names
    assert "convexgan.svt.svt" in names  # the function, not the module it shadows
    assert len(names) > 90


@pytest.mark.parametrize("name", public_names())
def test_public_docstring_follows_numpydoc(name):
    errors = [f"{code}: {message}" for code, message in numpydoc_validate.validate(name)["errors"] if code in CHECKS]
    assert not errors, f"{name}:\n" + "\n".join(errors)
