"""Interactive Brokers (TWS / IB Gateway) through ib_async.

venue.py is the Venue; mapping.py translates IB's objects and codes; pacing.py keeps order traffic
under IB's message rate; _ib.py is the only import of the client library. Nothing here is
imported until an ibkr venue is configured (see brokers/registry.py).
"""
