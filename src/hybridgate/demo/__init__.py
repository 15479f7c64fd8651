"""``hybridgate demo``: the gateway, a real workload, three arms, one report.

The same seeded agent workload (five workload classes, bursts, sensitive prompts, a cloud outage
in the middle) is replayed with the official ``openai`` SDK against three real ``hybridgate
serve`` processes in turn — the demo configuration as it is (**hybrid**), and the same
configuration with every class forced to ``local-only`` or to ``cloud-only`` — and the report
puts them side by side. See docs/demo.md.

=================  ===========================================================================
``workload``       the seeded trace: classes, arrivals, bursts, the outage window, prompts
``sensitive``      planted values (emails, Luhn-valid cards, IBANs) the scan must find
``arms``           the three arms' configurations, derived from the demo configuration
``gateway``        one ``hybridgate serve`` child process
``cloud``          the gateway's sandbox clouds: capture, outage, what they received
``driver``         replaying the trace with ``AsyncOpenAI``, watching ``/readyz``
``measure``        one arm's numbers, from the client, the decision log and ``/metrics``
``report``         the side-by-side report, its conclusion, JSON and Markdown
``runner``         all of it in order, and the children stopped whatever happens
=================  ===========================================================================
"""
