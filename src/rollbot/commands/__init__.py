"""What the desk can do, whichever face asked (Slack, the terminal, the clock): every rule and
every state change lives here, in six rooms named after a desk's jobs. Arrows point down only,
and each room's docstring says which rooms it may import (tests/test_architecture.py holds the
code to exactly these arrows, and to no import circle):

    approvals  -> rollback, risk, desk, killswitch
    risk       -> rollback, desk
    rollback   -> paging, desk, killswitch
    paging     -> desk
    desk       -> killswitch
    killswitch -> no other room

killswitch/  what may trade and the holds that stop it: states, gates, the guard, the fast hold
desk/        what every room is handed or shares: the app context, liveness, the outbox, text
paging/      who is told, and chased until they answer: escalation, webhooks, reminders
rollback/    from a kill to trading resumed: the engine, flatten, report, drills, resume, timers
risk/        limits and monitors, the dead man's switch, the armed status
approvals/   the two-person rule, and recovery at start (it finishes both rooms' work)

Below every room: rollbot.storage and rollbot.brokers; above: the faces in rollbot.bot, which
commands never import. This package and each room's own file import nothing, so a kill loads
only the modules it names.
"""
