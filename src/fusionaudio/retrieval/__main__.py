from fusionaudio.retrieval.cli import main

raise SystemExit(main())
