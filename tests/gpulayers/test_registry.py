"""Direct tests of gpulayers.registry.Registry, on a toy kind of built-in."""

import pytest

from gpulayers.registry import Registry


class Widget:
    def __init__(self, size=1):
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.size = size

    def get_config(self):
        return {"size": self.size}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __call__(self, x):
        return x

    def __eq__(self, other):
        return type(self) is type(other) and self.size == other.size


class Big(Widget):
    def __init__(self, size=10):
        super().__init__(size)


class Outside(Widget):
    """A Widget subclass that is not registered by name."""


def make(kind="widget"):
    by_name = {"Widget": Widget, "widget": Widget, "Big": Big, "big": Big}
    return Registry(kind, "keras.widgets", by_name, (Widget, Big), Widget,
                    shortcuts={"huge": lambda: Big(size=100)})


def test_lookup_finds_names_and_hints_at_close_ones():
    reg = make()
    assert reg.lookup("big", "w") is Big
    with pytest.raises(ValueError) as info:
        reg.lookup("bigg", "kernel_widget")
    assert str(info.value) == (
        "Invalid value for `kernel_widget`: unknown widget 'bigg'. Did you mean 'big'? "
        "Expected one of ['Big', 'Widget', 'big', 'widget']. Received: kernel_widget='bigg'"
    )
    with pytest.raises(ValueError, match=r"unknown widget 'zzz'\. Expected one of"):
        reg.lookup("zzz", "w")


def test_lookup_sees_later_additions_to_the_table():
    by_name = {}
    reg = Registry("widget", "keras.widgets", by_name)
    by_name["w"] = Widget
    assert reg.lookup("w", "x") is Widget


def test_deserialize_names_shortcuts_and_keras_dicts():
    reg = make()
    assert reg.deserialize("widget", "w") == Widget()
    assert reg.deserialize("huge", "w") == Big(100)
    config = {"module": "keras.widgets", "class_name": "Big", "config": {"size": 3}, "registered_name": None}
    assert reg.deserialize(config, "w") == Big(3)
    assert reg.deserialize({"class_name": "widget"}, "w") == Widget()
    # Shortcuts are string names only, and not offered in lookup messages.
    expected = r"unknown widget 'huge'\. Expected one of \['Big', 'Widget', 'big', 'widget'\]"
    with pytest.raises(ValueError, match=expected):
        reg.deserialize({"class_name": "huge", "config": {}}, "w")


@pytest.mark.parametrize("config, error, message", [
    (5, TypeError, r"Invalid type for `arg`: expected a string or a dict\. Received: arg=5 of type int"),
    ({"config": {}}, ValueError, r"needs a string 'class_name' and a dict 'config'"),
    ({"class_name": "Big", "config": [1]}, ValueError, r"needs a string 'class_name' and a dict 'config'"),
    ({"class_name": "Big", "module": "evil.widgets"}, ValueError,
     r"'Big' from module 'evil.widgets' is not a gpulayers built-in widget\. Received: arg="),
    ({"class_name": "Outside", "module": "keras.widgets"}, ValueError, r"unknown widget 'Outside'"),
    ({"class_name": "Big", "config": {"colour": 1}}, ValueError,
     r"Invalid value for `arg`: bad config for Big: .*colour"),
    ({"class_name": "Big", "config": {"size": -1}}, ValueError, r"bad config for Big: size must be >= 0, got -1\. "
                                                                 r"Received: arg="),
])
def test_deserialize_errors_name_the_argument(config, error, message):
    with pytest.raises(error, match=message) as info:
        make().deserialize(config, "arg")
    assert info.value.__cause__ is None


def test_serialize_builtins_custom_objects_and_none():
    reg = make()
    assert reg.serialize(None) is None
    assert reg.serialize(Big(4)) == {"module": "keras.widgets", "class_name": "Big", "config": {"size": 4},
                                     "registered_name": None}

    def double(x):
        return 2 * x

    assert reg.serialize(double) == {"module": __name__, "class_name": "function", "config": "double",
                                     "registered_name": "double"}
    class Gadget:  # a user object with a config, not one of the built-ins
        def __call__(self, x):
            return x

        def get_config(self):
            return {"k": 1}

    assert reg.serialize(Gadget()) == {"module": __name__, "class_name": "Gadget", "config": {"k": 1},
                                       "registered_name": "Gadget"}
    with pytest.raises(TypeError, match=r"^Invalid type for `widget`: expected a widget\. Received: 3$"):
        reg.serialize(3)


def test_serialize_round_trips_builtins():
    reg = make()
    for obj in (Widget(), Widget(7), Big(), Big(2)):
        assert reg.deserialize(reg.serialize(obj), "w") == obj


def test_get_resolves_every_identifier_form():
    reg = make()
    assert reg.get(None, "w") is None
    assert reg.get("big", "w") == Big()
    assert reg.get({"class_name": "Widget", "config": {"size": 2}}, "w") == Widget(2)
    assert reg.get(Outside, "w") == Outside()  # any subclass of the base
    obj, fn = Big(5), (lambda x: x)
    assert reg.get(obj, "w") is obj
    assert reg.get(fn, "w") is fn


@pytest.mark.parametrize("identifier", [3, 1.5, [1], int])
def test_get_refuses_other_types(identifier):
    with pytest.raises(TypeError) as info:
        make().get(identifier, "kernel_widget")
    assert str(info.value) == (
        f"Invalid type for `kernel_widget`: expected None, a widget name, a config dict, a Widget or a "
        f"callable. Received: kernel_widget={identifier!r} of type {type(identifier).__name__}"
    )


def test_messages_use_an_before_vowels():
    class Item(Widget):
        pass

    reg = Registry("item", "keras.items", {"Item": Item}, (Item,), Item)
    with pytest.raises(TypeError, match=r"expected None, an item name, a config dict, an Item or a callable"):
        reg.get(3, "x")
    with pytest.raises(TypeError, match=r"Invalid type for `item`: expected an item\."):
        reg.serialize(3)
