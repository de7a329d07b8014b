"""The lifecycle controller: KeptnEvaluation objectives and Analysis scoring on the same metrics.

- targets.py / template.py / scoring.py: pure logic (target syntax, query placeholders, scores)
- model.py: parsers for the five lifecycle kinds
- evaluation.py / analysis.py: one evaluation attempt, one analysis' values
- cli.py: `keptn-metrics evaluate` and `keptn-metrics analyze`
- runtime.py: the in-cluster controller (`run_controller`), gauges.py: its /metrics series
"""
