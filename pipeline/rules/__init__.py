"""Alert rules (pure): Sigma detection and correlation rules plus causelog's chain, absence and
silence rules, compiled once and evaluated by a pure reducer.

    from pipeline.rules import load, Engine, read_events, evaluate
    rules = load([Path("sigma/rules/cloud/aws/cloudtrail")])     # + the built-in pack
    events, rejected = read_events([Path("../shared/data/iam")])  # the sources' normalizers
    alerts = evaluate(Engine(rules), events)                     # event-time order, offline chains
    Engine(rules).matching(envelope_dict)                        # the detection rules one event matches
"""

from pipeline.rules.engine import Engine, Item, State
from pipeline.rules.loader import RuleSet, load
from pipeline.rules.model import Alert, Problem
from pipeline.rules.offline import evaluate, read_events

__all__ = ["Alert", "Engine", "Item", "Problem", "RuleSet", "State", "evaluate", "load", "read_events"]
