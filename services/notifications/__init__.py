"""The notifications service (:8004): price alerts, the inbox, webhooks (issue 12)."""
