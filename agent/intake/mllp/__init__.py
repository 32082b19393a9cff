"""The MLLP intake: a listener answering HL7 v2 messages with ACKs, and the sender that
delivers results as ORU^R01 to a configured destination."""
