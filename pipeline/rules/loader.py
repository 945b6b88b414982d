"""Load Sigma and causelog rules from YAML files, compile them once, and report bad ones.

Sources: the built-in pack (``pipeline/rules/pack/*.yml``, shipped in the package) and every
directory of ``CAUSELOG_RULES`` (colon-separated, read recursively, ``*.yml`` and ``*.yaml``).

pySigma parses detection and correlation rules (multi-document files and ``action: global``
included). causelog's own keys are handled around it:

- ``chain: {missing: [...], contains: [...]}`` on a detection rule (kept by pySigma as a custom
  attribute);
- ``actor.assurance: {lt: mfa}`` (``lt/lte/gt/gte/eq``) inside a selection, rewritten before
  pySigma sees it into the list of assurance levels it admits (none < claimed < authenticated <
  mfa < signed);
- correlation ``condition`` ranges (``{gt: 100, lte: 200}``), which pySigma refuses;
- ``absence:`` and ``silence:`` documents (see the README's Rules section), parsed here with
  their selections compiled through pySigma.

Every problem becomes a :class:`Problem` (file, rule id, Sigma feature, message); a bad rule
never stops the others from loading.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule, SigmaExtendedCorrelationCondition
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from pipeline.rules import logsource as ls
from pipeline.rules.compile import Unsupported, compile_detection
from pipeline.rules.model import (
    ASSURANCE_ORDER,
    LEVELS,
    Absence,
    ChainCheck,
    Correlation,
    Detection,
    LogSourceKey,
    Problem,
    RuleMeta,
    Selection,
    Silence,
)
from pipeline.rules.prefilter import requirements

PACK_DIR = Path(__file__).with_name("pack")
_CMP_OPS = ("lt", "lte", "gt", "gte", "eq", "neq")
_CORR_TYPES = ("event_count", "value_count", "temporal", "temporal_ordered", "value_sum", "value_avg")
_SPAN = re.compile(r"^\s*(\d+)\s*([smhdwMy])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2629746, "y": 31556952}


@dataclass
class RuleSet:
    """Every loaded rule plus the problems of those that could not be loaded."""

    detections: list[Detection] = field(default_factory=list)
    correlations: list[Correlation] = field(default_factory=list)
    absences: list[Absence] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.detections) + len(self.correlations) + len(self.absences) + len(self.silences)


def parse_timespan(value: Any) -> int:
    """``30m`` -> microseconds (Sigma units: s m h d w M y)."""
    m = _SPAN.match(str(value))
    if not m:
        raise ValueError(f"timespan {value!r} is not <number><s|m|h|d|w|M|y>")
    return int(m.group(1)) * _UNIT_S[m.group(2)] * 1_000_000


def rule_dirs(spec: str | None) -> list[Path]:
    """The directories of a colon-separated ``CAUSELOG_RULES`` value (empty parts ignored)."""
    return [Path(p).expanduser() for p in (spec or "").split(":") if p.strip()]


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """Every ``*.yml``/``*.yaml`` under the given files and directories, in a stable order."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".yml", ".yaml")))
        else:
            out.append(p)
    return out


def load(paths: Sequence[Path] = (), *, builtin: bool = True) -> RuleSet:
    """Load the built-in pack (unless ``builtin=False``) and every rule file under ``paths``."""
    files = ([PACK_DIR] if builtin else []) + list(paths)
    rs = RuleSet()
    raw_corr: list[tuple[SigmaCorrelationRule, str, dict[str, Any]]] = []
    for f in rule_files(files):
        rs.files.append(str(f))
        _load_file(f, rs, raw_corr)
    _resolve_correlations(rs, raw_corr)
    _check_duplicates(rs)
    return rs


# --------------------------------------------------------------------------------------------
# files and documents


def _load_file(path: Path, rs: RuleSet, raw_corr: list[tuple[SigmaCorrelationRule, str, dict[str, Any]]]) -> None:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except FileNotFoundError:
        rs.problems.append(Problem(name, "", "file", "no such file"))
        return
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        rs.problems.append(Problem(name, "", "yaml", str(exc).replace("\n", " ")))
        return
    sigma_docs: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            rs.problems.append(Problem(name, "", "yaml", f"a rule must be a mapping, got {type(doc).__name__}"))
            continue
        rid = str(doc.get("id") or doc.get("name") or doc.get("title") or "")
        try:
            if "absence" in doc:
                rs.absences.append(_absence(doc, name))
            elif "silence" in doc:
                rs.silences.append(_silence(doc, name))
            else:
                sigma_docs.append(_prepare(doc))
        except (Unsupported, SigmaError, ValueError, TypeError, KeyError) as exc:
            rs.problems.append(_problem(name, rid, exc))
    if not sigma_docs:
        return
    try:
        coll = SigmaCollection.from_dicts(sigma_docs, collect_errors=True, resolve_references=False)
    except SigmaError as exc:  # a collection-level error (action: global misuse ...)
        rs.problems.append(_problem(name, "", exc))
        return
    for rule in coll.rules:
        rid = _rule_key(rule)
        if rule.errors:
            for err in rule.errors:
                rs.problems.append(_problem(name, rid, err))
            continue
        try:
            if isinstance(rule, SigmaCorrelationRule):
                raw_corr.append((rule, name, rule.custom_attributes))
            else:
                rs.detections.append(_detection(rule, name))
        except (Unsupported, SigmaError, ValueError, TypeError) as exc:
            rs.problems.append(_problem(name, rid, exc))
    if not coll.rules:
        for err in coll.errors:
            rs.problems.append(_problem(name, "", err))


def _problem(file: str, rid: str, exc: BaseException) -> Problem:
    if isinstance(exc, Unsupported):
        return Problem(file, rid, exc.feature, exc.detail)
    if isinstance(exc, SigmaError):
        feature = type(exc).__name__.removeprefix("Sigma").removesuffix("Error") or "sigma"
        return Problem(file, rid, _feature_name(feature), str(exc))
    return Problem(file, rid, "causelog", str(exc) or type(exc).__name__)


def _feature_name(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", camel).lower()


def _rule_key(rule: SigmaRule | SigmaCorrelationRule) -> str:
    if rule.id is not None:
        return str(rule.id)
    return rule.name or rule.title or ""


def _meta(rule: SigmaRule | SigmaCorrelationRule, file: str) -> RuleMeta:
    level = rule.level.name.lower() if rule.level is not None else "medium"
    tags = tuple(f"{t.namespace}.{t.name}" for t in rule.tags)
    return RuleMeta(id=_rule_key(rule), title=rule.title or "", level=level, tags=tags, name=rule.name,
                    file=file, description=(rule.description or "").strip())


def _logsource_key(logsource: Any) -> LogSourceKey:
    def low(v: Any) -> str | None:
        return str(v).lower() if v else None

    if isinstance(logsource, dict):
        return low(logsource.get("product")), low(logsource.get("service")), low(logsource.get("category"))
    return low(logsource.product), low(logsource.service), low(logsource.category)


def _on_envelope(key: LogSourceKey) -> bool:
    return key[0] == ls.CAUSELOG


def _detection(rule: SigmaRule, file: str) -> Detection:
    key = _logsource_key(rule.logsource)
    if key == (None, None, None):
        raise Unsupported("logsource", "the rule names no product, service or category")
    chain = _chain_check(rule.custom_attributes.get("chain"))
    return Detection(meta=_meta(rule, file), logsource=key, on_envelope=_on_envelope(key),
                     predicate=compile_detection(rule), chain=chain, require=requirements(rule))


def _chain_check(spec: Any) -> ChainCheck | None:
    if spec is None:
        return None
    if not isinstance(spec, dict) or not set(spec) <= {"missing", "contains"} or not spec:
        raise Unsupported("chain", "`chain` takes `missing` and/or `contains`, each a list of event types")

    def types(v: Any) -> tuple[str, ...]:
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise Unsupported("chain", f"expected a list of event types, got {v!r}")
        return tuple(items)

    return ChainCheck(missing=types(spec.get("missing", [])), contains=types(spec.get("contains", [])))


# --------------------------------------------------------------------------------------------
# causelog rewrites before pySigma


def _prepare(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    det = doc.get("detection")
    if isinstance(det, dict):
        doc["detection"] = {k: (v if k == "condition" else _rewrite(v)) for k, v in det.items()}
    corr = doc.get("correlation")
    if isinstance(corr, dict) and isinstance(corr.get("condition"), dict):
        cond = corr["condition"]
        ops = [k for k in cond if k in _CMP_OPS]
        if len(ops) > 1:  # a range: pySigma takes one operator, causelog AND-s them all
            doc["x-causelog-condition"] = {k: cond[k] for k in ops}
            corr = dict(corr)
            corr["condition"] = {k: v for k, v in cond.items() if k not in ops[1:]}
            doc["correlation"] = corr
    return doc


def _rewrite(value: Any) -> Any:
    if isinstance(value, list):
        return [_rewrite(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for k, v in value.items():
        base = str(k).split("|", 1)[0]
        if base.endswith("assurance") and isinstance(v, dict):
            out[base] = _assurance_levels(v)
        else:
            out[k] = v
    return out


def _assurance_levels(spec: dict[str, Any]) -> list[str]:
    allowed = set(ASSURANCE_ORDER)
    for op, level in spec.items():
        if op not in ("lt", "lte", "gt", "gte", "eq") or level not in ASSURANCE_ORDER:
            raise Unsupported("assurance", f"expected {{lt|lte|gt|gte|eq: {'|'.join(ASSURANCE_ORDER)}}}, "
                                           f"got {op}: {level!r}")
        n = ASSURANCE_ORDER.index(level)
        keep = {
            "lt": ASSURANCE_ORDER[:n], "lte": ASSURANCE_ORDER[: n + 1], "gt": ASSURANCE_ORDER[n + 1:],
            "gte": ASSURANCE_ORDER[n:], "eq": (level,),
        }[op]
        allowed &= set(keep)
    if not allowed:
        raise Unsupported("assurance", f"{spec!r} admits no assurance level")
    return [a for a in ASSURANCE_ORDER if a in allowed]


# --------------------------------------------------------------------------------------------
# absence and silence


def _plain_meta(doc: dict[str, Any], file: str) -> RuleMeta:
    rid = doc.get("id") or doc.get("name")
    title = doc.get("title")
    if not rid or not title:
        raise Unsupported("id", "a causelog rule needs `id` and `title`")
    level = str(doc.get("level") or "medium").lower()
    if level not in LEVELS:
        raise Unsupported("level", f"level {level!r} is not one of {', '.join(LEVELS)}")
    tags = doc.get("tags") or []
    if not isinstance(tags, list):
        raise Unsupported("tags", "`tags` must be a list")
    return RuleMeta(id=str(rid), title=str(title), level=level, tags=tuple(map(str, tags)),
                    name=doc.get("name"), file=file, description=str(doc.get("description") or "").strip())


def _selection(spec: Any, doc: dict[str, Any], what: str) -> Selection:
    if not isinstance(spec, dict) or not spec:
        raise Unsupported(what, f"`{what}` must be a selection (a mapping of fields) or a detection block")
    logsource = spec.get("logsource", doc.get("logsource") or {"product": ls.CAUSELOG})
    detection = spec.get("detection")
    if detection is None:
        body = {k: v for k, v in spec.items() if k != "logsource"}
        detection = {"selection": body, "condition": "selection"}
    synthetic = {"title": f"{doc.get('title')} ({what})", "logsource": logsource,
                 "detection": _prepare({"detection": detection})["detection"]}
    rule = SigmaRule.from_dict(synthetic)
    key = _logsource_key(logsource)
    return Selection(logsource=key, on_envelope=_on_envelope(key), predicate=compile_detection(rule))


def _absence(doc: dict[str, Any], file: str) -> Absence:
    spec = doc["absence"]
    if not isinstance(spec, dict):
        raise Unsupported("absence", "`absence` must be a mapping with after, expect, within and join")
    missing = [k for k in ("after", "expect", "within") if k not in spec]
    if missing:
        raise Unsupported("absence", f"missing {', '.join(missing)}")
    join = spec.get("join", "chain")
    join_t = (join,) if isinstance(join, str) else tuple(join) if isinstance(join, list) else None
    if not join_t or not all(isinstance(j, str) and j for j in join_t):
        raise Unsupported("absence", f"`join` must be `chain` or a list of fields, got {join!r}")
    return Absence(meta=_plain_meta(doc, file), after=_selection(spec["after"], doc, "after"),
                   expect=_selection(spec["expect"], doc, "expect"), join=join_t,
                   within_us=parse_timespan(spec["within"]))


def _silence(doc: dict[str, Any], file: str) -> Silence:
    spec = doc["silence"]
    if not isinstance(spec, dict) or "for" not in spec:
        raise Unsupported("silence", "`silence` needs `for` (a timespan) and optionally `source`, `min_events`, "
                                     "`baseline`")
    source = str(spec.get("source", "*"))
    min_events = int(spec.get("min_events", 10))
    if min_events < 1:
        raise Unsupported("silence", "`min_events` must be at least 1")
    for_us = parse_timespan(spec["for"])
    baseline = parse_timespan(spec["baseline"]) if "baseline" in spec else 4 * for_us
    return Silence(meta=_plain_meta(doc, file), source=source, for_us=for_us, min_events=min_events,
                   baseline_us=baseline)


def silence_matches(rule: Silence, source: str) -> bool:
    """Does an envelope ``source`` fall under a silence rule's glob?"""
    return fnmatch.fnmatchcase(source, rule.source)


# --------------------------------------------------------------------------------------------
# correlations


def _resolve_correlations(rs: RuleSet, raw: list[tuple[SigmaCorrelationRule, str, dict[str, Any]]]) -> None:
    index: dict[str, str] = {}
    for d in rs.detections:
        index[d.meta.id] = d.meta.id
        if d.meta.name:
            index[d.meta.name] = d.meta.id
    for rule, _, _ in raw:
        key = _rule_key(rule)
        index[key] = key
        if rule.name:
            index[rule.name] = key
    used_quietly: set[str] = set()
    for rule, file, custom in raw:
        try:
            corr = _correlation(rule, file, custom, index)
        except (Unsupported, SigmaError, ValueError, TypeError) as exc:
            rs.problems.append(_problem(file, _rule_key(rule), exc))
            continue
        rs.correlations.append(corr)
        if not corr.generate:
            used_quietly.update(corr.rules)
    if used_quietly:
        rs.detections = [
            Detection(meta=d.meta, logsource=d.logsource, on_envelope=d.on_envelope, predicate=d.predicate,
                      chain=d.chain, alerts=False, require=d.require) if d.meta.id in used_quietly else d
            for d in rs.detections
        ]


def _correlation(rule: SigmaCorrelationRule, file: str, custom: dict[str, Any], index: dict[str, str]) -> Correlation:
    ctype = rule.type.name.lower()
    if ctype not in _CORR_TYPES:
        raise Unsupported("correlation type", f"{ctype} is not supported (supported: {', '.join(_CORR_TYPES)})")

    def resolve(ref: str) -> str:
        if ref not in index:
            raise Unsupported("rules", f"referenced rule {ref!r} is not loaded")
        return index[ref]

    refs = [r.reference for r in (rule.rules or [])]
    expression = None
    cond = rule.condition
    conditions: tuple[tuple[str, float], ...] = ()
    fields: tuple[str, ...] = ()
    if isinstance(cond, SigmaExtendedCorrelationCondition):
        expression = cond.parsed
        if not refs:
            refs = cond.get_referenced_rules()
    elif cond is not None:
        ranged = custom.get("x-causelog-condition")
        if ranged:
            conditions = tuple((op, float(v)) for op, v in ranged.items())
        else:
            conditions = ((cond.op.name.lower(), float(cond.count)),)
        if cond.fieldref:
            fields = (cond.fieldref,) if isinstance(cond.fieldref, str) else tuple(cond.fieldref)
    if ctype.startswith("temporal") and not conditions and expression is None:
        conditions = (("gte", float(len(refs))),)
    if not refs:
        raise Unsupported("rules", "a correlation needs the rules it correlates")
    aliases: dict[str, dict[str, str]] = {}
    for alias in rule.aliases:
        aliases[alias.alias] = {resolve(r.reference): f for r, f in alias.mapping.items()}
    if rule.timespan is None:
        raise Unsupported("timespan", "a correlation needs a timespan")
    return Correlation(
        meta=_meta(rule, file), type=ctype, rules=tuple(resolve(r) for r in refs),
        group_by=tuple(rule.group_by or ()), timespan_us=int(rule.timespan.seconds) * 1_000_000,
        conditions=conditions, fields=fields, aliases=aliases, generate=bool(rule.generate),
        expression=_map_expression(expression, resolve) if expression is not None else None,
    )


def _map_expression(node: Any, resolve: Any) -> Any:
    """The extended condition as nested tuples: ("ref", id) / ("and"|"or", a, b) / ("not", a)."""
    from sigma.correlations import CorrelationConditionAND, CorrelationConditionNOT, CorrelationConditionOR

    if isinstance(node, CorrelationConditionAND | CorrelationConditionOR):
        op = "and" if isinstance(node, CorrelationConditionAND) else "or"
        return (op, *(_map_expression(a, resolve) for a in node.args))
    if isinstance(node, CorrelationConditionNOT):
        return ("not", _map_expression(node.args[0], resolve))
    return ("ref", resolve(node.reference))


def _check_duplicates(rs: RuleSet) -> None:
    seen: dict[str, str] = {}
    for meta in [d.meta for d in rs.detections] + [c.meta for c in rs.correlations] + \
            [a.meta for a in rs.absences] + [s.meta for s in rs.silences]:
        if meta.id in seen:
            where = "earlier in this file" if seen[meta.id] == meta.file else f"in {seen[meta.id]}"
            rs.problems.append(Problem(meta.file, meta.id, "id",
                                       f"the same id is also defined {where}; alerts of the two rules would "
                                       "share ids"))
        seen.setdefault(meta.id, meta.file)
