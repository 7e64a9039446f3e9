from gan.cli import main

raise SystemExit(main())
