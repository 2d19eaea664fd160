"""The audit service: an append-only, hash-chained log of every request, step and outcome.

Other services publish records with `shared.audit.record`; this service stores each record id
once, chains it to the one before, and anchors the chain in signed, chained checkpoints kept in
anchor locations off the database host (services/audit/anchors.py).
"""

from services.audit.chain import BadRecord
from services.audit.log import ChainReport, advance_checkpoint, export, search, verify_chain
from services.audit.service import run_audit

__all__ = ["BadRecord", "ChainReport", "advance_checkpoint", "export", "run_audit", "search", "verify_chain"]
