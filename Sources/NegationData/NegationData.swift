// NegationData: the record schema for negation data (docs/data.md), its validation, the
// synthetic world generator, importers for the peers' benchmark formats, and the metrics.
// Library code never prints: progress goes to callbacks, problems to typed errors.
