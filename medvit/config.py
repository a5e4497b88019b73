"""Typed configuration: dataclasses loaded from YAML, ``a.b=value`` overrides, strict keys.

- :func:`from_dict` builds a (nested) dataclass from a mapping and rejects unknown keys with the
  closest valid names; values are checked against the field types.
- :func:`apply_overrides` applies ``a.b=value`` strings (values parsed as YAML scalars/lists).
- :func:`yaml_loads` / :func:`yaml_dumps`: the one YAML reading rule for config files and overrides: YAML 1.1
  (PyYAML's safe schema: ``yes``/``no``/``on``/``off`` are booleans, ``010`` octal, ``0x1F`` hex, ``1:30``
  sexagesimal) plus YAML 1.2's exponent floats (core schema, section 10.3.2; JSON): ``1e-300`` or ``1.0e9``, strings
  in YAML 1.1, are numbers here. The writer quotes strings that would read back as numbers. A number written in a
  form its value does not print back as (``1e5``, ``1.10``, ``010``) keeps that text: a ``str`` field takes the
  text the user wrote (``model_version: 1.10`` is ``"1.10"``, not ``"1.1"``), a number field takes the number.
- :func:`to_dict` / :func:`save_resolved` write the resolved config beside a run's outputs.
- :func:`option` declares a field with its documentation (dataclass field metadata ``"help"``, as peft and
  transformers do); :func:`describe` lists a config's fields with type, default and that text. ``medvit list task
  NAME`` prints it and validation errors quote it, so the help, the docs and the errors read the same words.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from medvit.registry import did_you_mean

T = TypeVar("T")

#: the dataclass field metadata key holding a field's documentation
HELP = "help"


def option(default: Any = dataclasses.MISSING, help: str = "", *,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A config dataclass field documented once: ``epochs: float = option(1.0, "passes over the training set")``.

    The text goes into the field's metadata (``HELP``); give ``default_factory`` for mutable defaults.
    """
    return dataclasses.field(default=default, default_factory=default_factory, metadata={HELP: help})


def field_help(cls: type, name: str) -> str:
    """The documentation of field ``name`` of dataclass ``cls`` ("" when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get(HELP, ""))
    return ""


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One documented config key (``a.b`` for nested dataclasses)."""

    key: str
    type: str
    default: Any
    help: str


def describe(cls: type, prefix: str = "") -> list[FieldDoc]:
    """Every key of config dataclass ``cls`` (nested dataclasses expanded), with type, default and help."""
    hints = typing.get_type_hints(cls)
    out: list[FieldDoc] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += describe(tp, key)
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out.append(FieldDoc(key, tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", ""), default,
                            str(f.metadata.get(HELP, ""))))
    return out


def format_fields(cls: type) -> str:
    """:func:`describe` as aligned text lines: ``key  type = default  help``."""
    docs = describe(cls)
    width = max((len(d.key) for d in docs), default=0)
    lines = []
    for d in docs:
        default = "(required)" if d.default is dataclasses.MISSING else repr(d.default)
        lines.append(f"  {d.key:<{width}}  {d.type} = {default}" + (f"\n  {'':<{width}}    {d.help}" if d.help else ""))
    return "\n".join(lines)


def _with_help(cls: type, name: str, message: str) -> str:
    h = field_help(cls, name)
    return f"{message} ({name}: {h})" if h else message


class ConfigError(ValueError):
    """A config key or value that cannot be accepted; the message names the key and the fix."""


def _suggest(key: str, valid: list[str]) -> str:
    hint = did_you_mean(key, valid)
    return f" ({hint})" if hint else ""


class _TextFloat(float):
    """A float read from YAML whose written form its value does not print back as (``1e5``, ``1.10``, ``.inf``):
    ``.text`` is that form, which a ``str`` field takes (:func:`_text`). Behaves as the float everywhere else."""

    text: str


class _TextInt(int):
    """An int read from YAML written in another form than its decimal value (``010``, ``0x10``, ``1:30``, ``+5``);
    ``.text`` is that form (see :class:`_TextFloat`)."""

    text: str


def _text(value: Any) -> str:
    """The text a scalar was written as in YAML (a number keeps its written form), else ``str(value)``."""
    return getattr(value, "text", None) or str(value)


def _plain(value: Any) -> Any:
    """``value`` with :class:`_TextFloat` / :class:`_TextInt` turned back into plain float / int."""
    if isinstance(value, _TextFloat):
        return float(value)
    if isinstance(value, _TextInt):
        return int(value)
    return value


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to type ``tp`` (dataclass, Optional, list, tuple, Literal, scalars)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        arms = [a for a in args if a is not type(None)]
        for a in arms:
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        if len(arms) == 1:  # X | None: the one arm's own message names the field and the reason
            raise ConfigError(errors[0])
        raise ConfigError(f"{where}: {value!r} fits none of {tp} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return next(a for a in get_args(tp) if a == value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            f = float(value)
        except OverflowError:  # an int beyond float range (math.isfinite raised it too)
            f = math.inf
        if not math.isfinite(f):
            raise ConfigError(f"{where} must be a finite number, got {_text(value)}"
                              + (" (a number beyond ±1.8e308 reads as infinite)" if math.isinf(f) else ""))
        return f
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}"
                              + (" (YAML reads yes/no/on/off/true/false as booleans: quote it)"
                                 if isinstance(value, bool) else ""))
        return _text(value)
    if tp is Path:
        return Path(value)
    return value


def check_type(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked / converted as a config field of type ``tp`` would be (``1e3`` for an ``int`` -> 1000,
    ``"abc"`` for a ``float`` refused); :class:`ConfigError` starting with ``where``. For values outside a
    dataclass, e.g. a dataset's ``dataset_args`` against its builder's annotations."""
    return _coerce(value, tp, where)


def check_arg_types(args: typing.Mapping[str, Any], functions: typing.Sequence[typing.Callable[..., Any]],
                    prefix: str = "", name: typing.Callable[[str], str] | None = None) -> dict[str, Any]:
    """``args`` (keyword arguments for ``functions``, e.g. read from a file) with each value checked / converted by
    :func:`check_type` against the annotation of the same-named parameter in the first of ``functions`` that
    annotates it; :class:`ConfigError` naming ``<prefix>.<key>`` (``dataset_args.prevalence: expected a number, got
    'abc'``; ``name(key)`` instead when given, e.g. a command-line option). A key no function annotates (or whose
    annotations cannot be resolved) passes unchanged."""
    hints = []
    for fn in functions:
        try:
            hints.append(typing.get_type_hints(fn))
        except Exception:  # noqa: BLE001 - unresolvable annotations: nothing to check against
            continue
    out = dict(args)
    for k, v in args.items():
        tp = next((h[k] for h in hints if k in h), Any)
        out[k] = check_type(v, tp, name(k) if name else f"{prefix}.{k}" if prefix else k)
    return out


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`ConfigError` with suggestions.

    After construction the dataclass's ``__post_init__`` may validate values further.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    flds = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in (data or {}).items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in flds:
            raise ConfigError(f"unknown config key {where!r}{_suggest(key, list(flds))}; "
                              f"valid keys{' under ' + prefix if prefix else ''}: {', '.join(flds)}")
        try:
            kwargs[key] = _coerce(value, hints[key], where)
        except ConfigError as e:
            if dataclasses.is_dataclass(hints[key]):
                raise
            raise ConfigError(_with_help(cls, key, str(e))) from None
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        # a __post_init__ message starts with the field it is about: quote that field's documentation
        first = str(e).split(" ", 1)[0].strip(":'\"")
        raise ConfigError(f"{prefix or cls.__name__}: {_with_help(cls, first, str(e))}") from e


#: numbers in exponent form that YAML 1.1 reads as strings (``1e9``, ``1.0e9``, ``.5E-3``); YAML 1.2 core schema
#: (section 10.3.2, its float pattern's exponent forms exactly: no ``_`` digit separators) and JSON read them as
#: floats. The 1.1 rules still cover every other form.
_EXP_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$")
_yaml_classes: tuple[type, type] | None = None


def _yaml_pair() -> tuple[type, type]:
    """(Loader, Dumper): PyYAML's safe pair plus :data:`_EXP_FLOAT` as a float (the dumper then quotes a string
    such as ``"1e5"`` so that it reads back as the string)."""
    global _yaml_classes
    if _yaml_classes is None:
        import yaml

        class Loader(yaml.SafeLoader):
            def construct_object(self, node: Any, deep: bool = False) -> Any:
                """A scalar its resolver matched but its constructor refuses (``0x_``, ``0b_``, the date
                ``2024-13-45``: a bare ValueError from PyYAML) is a ``yaml.YAMLError`` naming the text and where it
                stands, as every other YAML error is."""
                try:
                    return super().construct_object(node, deep)
                except ValueError as e:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{node.value!r} cannot be read as {node.tag.rsplit(':', 1)[-1]} ({e}); quote it "
                        "if it is text", node.start_mark) from None

        class Dumper(yaml.SafeDumper):
            pass

        for cls in (Loader, Dumper):
            cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789."))
        Loader.add_constructor("tag:yaml.org,2002:int", _keeping_text(yaml.SafeLoader.construct_yaml_int, _TextInt))
        Loader.add_constructor("tag:yaml.org,2002:float",
                               _keeping_text(yaml.SafeLoader.construct_yaml_float, _TextFloat))
        Dumper.add_representer(_TextInt, yaml.SafeDumper.represent_int)
        Dumper.add_representer(_TextFloat, yaml.SafeDumper.represent_float)
        _yaml_classes = (Loader, Dumper)
    return _yaml_classes


def _keeping_text(construct: Any, wrap: type) -> Any:
    """A PyYAML scalar constructor whose number keeps its written text when the value prints otherwise."""

    def constructor(loader: Any, node: Any) -> Any:
        value = construct(loader, node)
        if str(value) == node.value or (isinstance(value, float) and repr(value) == node.value):
            return value
        out = wrap(value)
        out.text = node.value
        return out

    return constructor


def yaml_loads(text: str) -> Any:
    """Parse YAML text safely (no object tags) with exponent-form numbers read as floats (see module doc).
    Raises ``yaml.YAMLError`` as ``yaml.safe_load`` does."""
    import yaml

    return yaml.load(text, Loader=_yaml_pair()[0])  # a SafeLoader subclass: no object tags


def yaml_dumps(data: Any, sort_keys: bool = False) -> str:
    """YAML text for plain data (``yaml.safe_dump``) that :func:`yaml_loads` reads back to the same values."""
    import yaml

    return yaml.dump(data, Dumper=_yaml_pair()[1], sort_keys=sort_keys)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3); the value is parsed as a YAML scalar or list (:func:`yaml_loads`:
    ``eps=1e-8`` is a number)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml_loads(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from e
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a nested dict (copy); missing sections are created."""
    import copy

    out = copy.deepcopy(data)
    for o in overrides:
        path, value = parse_override(o)
        node = out
        for p in path[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {o!r}: {p!r} is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain dict/list/scalars suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return _plain(obj)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (:func:`yaml_loads`); errors name the file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        data = yaml_loads(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def save_resolved(cfg: Any, out_dir: str | Path, name: str = "config.resolved.yaml") -> Path:
    """Write the resolved config beside a run's outputs; returns the file path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = out / name
    p.write_text(yaml_dumps(to_dict(cfg)))
    return p
