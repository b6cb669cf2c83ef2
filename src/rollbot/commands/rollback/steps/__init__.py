"""The rollback's five steps (IBKR seed), one module each, each an `async` function of the
run's RunContext (rollback/run_context.py) that returns its StepReport's fields:

halt.py        1 Immediate Halt: the hold, the cancels in scope, the NAV at the halt
disconnect.py  2 Disconnect: the live gates off, reconnects off, the guard read back
assess.py      3 Assess Positions: every venue's book, and the flatten strategy per venue
flatten.py     4 Flatten Positions: each venue closed to zero (rollback/flatten.py's closer)
verify.py      5 Verify Recovery: the books read back, the NAV change, the state and gates

rollback/run_steps.py runs them in order and records each; a step never calls another's
function except to read a venue the same way (step 5 reads back as step 3 does).
"""
