"""Customers, workspaces and API tokens."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.domain import hash_secret, new_secret
from db.models import ApiToken, Customer, Workspace
from db.repositories.webhooks import new_signing_secret


def create_customer(session: Session, name: str, *, admin: bool = False) -> tuple[Customer, str]:
    """Create a customer with one token; returns the customer and the plaintext token."""
    customer = Customer(name=name, is_admin=admin, webhook_secret=new_signing_secret())
    session.add(customer)
    session.flush()
    token = issue_token(session, customer, admin=admin)
    return customer, token


def issue_token(session: Session, customer: Customer, *, admin: bool = False) -> str:
    """A new bearer token for the customer (stored hashed)."""
    token = new_secret("spt_")
    session.add(
        ApiToken(
            customer_id=customer.id,
            token_hash=hash_secret(token),
            prefix=token[:8],
            is_admin=admin,
        )
    )
    session.flush()
    return token


def customer_for_token(session: Session, token: str) -> tuple[Customer, bool] | None:
    """The customer and admin flag for a bearer token, or None."""
    row = session.execute(
        select(Customer, ApiToken.is_admin)
        .join(ApiToken, ApiToken.customer_id == Customer.id)
        .where(ApiToken.token_hash == hash_secret(token), ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return row[0], bool(row[1])


def get_workspace(session: Session, customer_id: int, workspace_id: int) -> Workspace | None:
    """A workspace of the customer, or None."""
    return session.scalar(
        select(Workspace).where(Workspace.id == workspace_id, Workspace.customer_id == customer_id)
    )


def create_workspace(session: Session, customer_id: int, name: str) -> Workspace:
    """Create a workspace for the customer."""
    workspace = Workspace(customer_id=customer_id, name=name)
    session.add(workspace)
    session.flush()
    return workspace
