"""Engines: each primitive's client-side protocol (waiting, writing, renewing) over the
kernel and the machines. Imports no public facade.
"""
