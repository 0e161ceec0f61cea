"""MongoDB step types (pymongo): replica-set status and lag, step-down, freeze, planned
election, reconfiguration (forced only with a data-loss acknowledgement), write probe."""
