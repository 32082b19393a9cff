"""The file engine shared by the drop folder and ``edge-agent score``: files cut into one
record per patient, scored through the data plane, results written durably with a journal
so a crash loses and duplicates nothing. See docs/drop-folder.md."""
