"""What lets others check the ledger without trusting its operator: signed notes,
checkpoints, witness cosignatures and the policies that say whose cosignatures count."""
