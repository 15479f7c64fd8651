"""``hybridgate simulate``: a discrete-event simulation of the gateway on virtual time.

It drives the server's own planner, live health (statistics, predictor, breakers), retry policy
and budget, hedge specification and cost model against modelled backends. See docs/simulator.md.
"""
