"""Billing's configuration: environment variables prefixed `TENANTRY_BILLING_`."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenantry.core.invoices import Party


class BillingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTRY_BILLING_", frozen=True, extra="ignore")

    seller_name: str = Field(default="", description="Your legal name, printed on invoices.")
    seller_address: str = Field(
        default="", description="Your address, lines separated by `\\n` or `|`."
    )
    seller_country: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{2}$",
        description="Your country (ISO 3166-1 alpha-2): a buyer with a tax id elsewhere is "
        "reverse-charged.",
    )
    seller_tax_id: str = Field(default="", description="Your VAT or tax id.")
    seller_email: str = Field(default="", description="Where customers write about invoices.")
    invoice_prefix: str = Field(
        default="INV",
        pattern=r"^[A-Z0-9][A-Z0-9-]{0,15}$",
        description="Invoice numbers are `<prefix>-000001`, gap-free per prefix.",
    )
    credit_note_prefix: str = Field(
        default="CN", pattern=r"^[A-Z0-9][A-Z0-9-]{0,15}$", description="Credit note numbers."
    )
    due_days: int = Field(
        default=7, ge=0, le=365, description="Days after finalization an invoice is due."
    )
    finalize_grace: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds a draft waits after its boundary for late events before it is "
        "finalized and numbered.",
    )
    credit_unused_on_cancel: bool = Field(
        default=False,
        description="Credit the unused part of the base fee when a Subscription is deleted "
        "mid-period.",
    )
    run_interval: float = Field(
        default=300.0,
        ge=0,
        description="Seconds between scheduled billing runs (0: only when an admin asks).",
    )
    pdf_timeout: float = Field(default=30.0, gt=0, description="Seconds to render one PDF.")

    @model_validator(mode="after")
    def _own_sequences(self) -> BillingSettings:
        if self.invoice_prefix == self.credit_note_prefix:
            raise ValueError(
                "TENANTRY_BILLING_INVOICE_PREFIX and TENANTRY_BILLING_CREDIT_NOTE_PREFIX are "
                f"both {self.invoice_prefix!r}: each needs a sequence of its own"
            )
        return self

    def seller(self) -> Party:
        lines = self.seller_address.replace("|", "\n").splitlines()
        return Party(
            name=self.seller_name,
            address=tuple(line.strip() for line in lines if line.strip()),
            country=self.seller_country,
            tax_id=self.seller_tax_id,
            email=self.seller_email,
        )
