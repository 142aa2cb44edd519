from benchmarks.zoo.run import main

raise SystemExit(main())
