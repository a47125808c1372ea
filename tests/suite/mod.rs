mod cli;
mod ledger;
mod orchestrator;
mod snapshots;
