from videosynth.cli import main

raise SystemExit(main())
