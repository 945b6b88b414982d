"""Alert rules (pure): Sigma detection and correlation rules plus causelog's chain, absence and
silence rules, compiled once and evaluated by a pure reducer (:func:`pipeline.rules.engine.step`)."""
