// Package rotate renews certificates and writes them to disk. A renewal is
// a transaction: new files are staged beside the old ones and verified,
// the old ones are backed up, the new ones are renamed into place and
// synced, then read back and verified again; any failure after the first
// rename rolls back from the backup, and a crash at any point is repaired
// by Repair on the next start. How a certificate and its key sit in files
// (a pair, one combined file, a kubeconfig user, the kubelet's store with
// its -current.pem link) is a codec per Storage, looked up by the storage
// name the journal records; the transaction, Repair and Restore go
// through it and know no storage by name. The package knows nothing of
// the agent: it is handed Targets and returns Results.
package rotate
