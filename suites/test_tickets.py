"""A hand-written check beside the declarative suites: anything pytest can assert about a result."""


def test_few_shot_beats_inline(evalkit):
    few = evalkit.run("suites/tickets.eval.yaml", candidate="few_shot")
    inline = evalkit.run("suites/tickets.eval.yaml", candidate="inline")
    assert few.metrics["accuracy"] >= inline.metrics["accuracy"]


def test_every_ticket_category_is_predicted(evalkit):
    result = evalkit.run("suites/tickets.eval.yaml", candidate="zero_shot")
    assert {e.output for e in result.examples} == {"billing", "technical", "account", "shipping", "other"}
