"""KMS (2016-01-20): secrets that hold Redis accounts' credentials and rotate them (docs/kms.md)."""
