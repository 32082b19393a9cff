"""HL7 v2 on the wire: ER7 reading, MLLP framing, ACK and ORU building. A leaf used by the
records reader, the MLLP listener and the results sender; it knows nothing of them."""
