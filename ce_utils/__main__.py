from ce_utils.cli import main

raise SystemExit(main())
